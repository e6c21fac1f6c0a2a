"""``drsom-status`` (drsom/tools/sweep_status.py) in a checkout: default paths under the repository
root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import run_in_checkout

if __name__ == "__main__":
    run_in_checkout("sweep_status", __file__)
