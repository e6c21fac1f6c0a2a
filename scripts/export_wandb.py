"""``drsom-export-wandb`` (drsom/tools/export_wandb.py) in a checkout: default paths under the
repository root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import run_in_checkout

if __name__ == "__main__":
    run_in_checkout("export_wandb", __file__)
