"""``drsom-figures`` (drsom/tools/build_figures.py) in a checkout, with its default paths under the
repository root instead of the current directory."""

from pathlib import Path

from drsom.tools.build_figures import main

if __name__ == "__main__":
    raise SystemExit(main(base_dir=Path(__file__).resolve().parents[1]))
