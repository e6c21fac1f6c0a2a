"""``drsom-figures`` (drsom/tools/build_figures.py) in a checkout: default paths under the
repository root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import checkout_main

main = checkout_main("build_figures", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
