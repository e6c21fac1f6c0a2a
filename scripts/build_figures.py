"""``drsom figures`` (drsom/tools/figures.py) under the design card's script name: default paths
under the repository root of this checkout (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import checkout_main

main = checkout_main("figures", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
