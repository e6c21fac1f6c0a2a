"""``drsom <tool> [options]``: every tool of the suite under one command (``drsom --help`` lists
them; ``drsom <tool> --help`` gives a tool's options); ``drsom run [key=value ...]`` trains, as
``drsom-run`` does. ``export-wandb`` and ``export_wandb`` are one tool."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from drsom.tools import TOOLS


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name == "run":  # Hydra reads sys.argv itself
        from drsom.launch.cli import main as run

        sys.argv = ["drsom run", *rest]
        run(base_dir)
        return 0
    if name not in TOOLS:
        print(f"error: no tool {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"drsom.tools.{name}")
    sys.argv[0] = f"drsom {argv[0]}"  # what the tool's usage and error lines call it
    return module.main(rest, base_dir=base_dir)


def usage() -> str:
    width = max(map(len, TOOLS))
    lines = ["usage: drsom <tool> [options]   (drsom <tool> --help)", ""]
    lines.append(f"  {'run':<{width}}  train one config, or sweep with -m (drsom-run)")
    lines += [f"  {name.replace('_', '-'):<{width}}  {what}" for name, what in TOOLS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
