"""``python -m drsom [key=value ...]``: the runner, as ``drsom-run`` (drsom/run.py)."""

from drsom.run import main

if __name__ == "__main__":
    main()
