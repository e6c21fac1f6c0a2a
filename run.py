"""``python run.py [key=value ...]`` in a checkout: ``drsom-run`` (drsom/launch/cli.py), with
relative ``results_dir`` and ``data.root`` taken from the repository root, wherever it is
launched."""

from pathlib import Path

from drsom.launch.cli import main

if __name__ == "__main__":
    main(base_dir=Path(__file__).resolve().parent)
