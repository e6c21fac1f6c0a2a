"""``drsom select`` (drsom/tools/select.py) under the design card's script name: default paths
under the repository root of this checkout (drsom.tools.checkout_root), wherever it is launched.
(Not ``scripts/select.py``: this folder is first on the import path of every script in it, and a
``select.py`` here would take the place of the standard library's ``select``, which subprocess
imports.)"""

from drsom.tools import checkout_main

main = checkout_main("select", __file__)

if __name__ == "__main__":
    raise SystemExit(main())
