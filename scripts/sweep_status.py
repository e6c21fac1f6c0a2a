"""``drsom-status`` (drsom/tools/sweep_status.py) in a checkout: default paths under the repository
root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import checkout_main

main = checkout_main("sweep_status", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
