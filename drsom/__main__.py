"""``python -m drsom [key=value ...]``: the runner, as ``drsom-run`` (drsom/launch/cli.py)."""

from drsom.launch.cli import main

if __name__ == "__main__":
    main()
