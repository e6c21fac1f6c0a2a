"""``drsom-export-wandb`` (drsom/tools/export_wandb.py) in a checkout: default paths under the
repository root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import checkout_main

main = checkout_main("export_wandb", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
