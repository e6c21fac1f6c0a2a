"""``drsom-select`` (drsom/tools/select.py) in a checkout, with its default paths under the
repository root instead of the current directory. (Not ``scripts/select.py``: this folder is
first on the import path of every script in it, and a ``select.py`` here would take the place of
the standard library's ``select``, which subprocess imports.)"""

from pathlib import Path

from drsom.tools.select import main

if __name__ == "__main__":
    raise SystemExit(main(base_dir=Path(__file__).resolve().parents[1]))
