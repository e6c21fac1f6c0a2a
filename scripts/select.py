"""``drsom-select`` (drsom/tools/select.py) in a checkout, with its default paths under the
repository root instead of the current directory."""

import os
import sys

# This file's folder is first on the import path, and its name is the standard library's
# ``select`` (which subprocess imports): leave the folder off before anything imports it.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from pathlib import Path  # noqa: E402

from drsom.tools.select import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(base_dir=Path(__file__).resolve().parents[1]))
