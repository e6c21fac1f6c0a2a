"""``drsom-curves`` (drsom/tools/plot_curves.py) in a checkout: default paths under the repository
root (drsom.tools.checkout_root), wherever it is launched."""

from drsom.tools import checkout_main

main = checkout_main("plot_curves", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
