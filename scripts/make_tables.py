"""``drsom-tables`` (drsom/tools/make_tables.py) in a checkout, with its default paths under the
repository root instead of the current directory."""

from pathlib import Path

from drsom.tools.make_tables import main

if __name__ == "__main__":
    raise SystemExit(main(base_dir=Path(__file__).resolve().parents[1]))
