"""``python run.py [key=value ...]`` in a checkout: ``drsom-run`` (drsom/launch/cli.py), with
relative ``results_dir`` and ``data.root`` taken from the repository root, wherever it is
launched."""

from drsom.launch.cli import main
from drsom.tools import checkout_root

if __name__ == "__main__":
    main(base_dir=checkout_root(__file__))
