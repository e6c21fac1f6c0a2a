"""The suite's command-line tools; each module's ``main(argv, base_dir=None)`` is a command.

``drsom-figures`` (build_figures), ``drsom-tables`` (make_tables), ``drsom-curves`` (plot_curves),
``drsom-reproduce``, ``drsom-status`` (sweep_status), ``drsom-export-wandb``, ``drsom-select``
(select); or ``python -m drsom.tools.<module>``. Default paths (``results/runs``,
``results/figures``, ...) and relative ``results_dir`` / ``data.root`` of composed configs are
taken from ``base_dir``: for a console script the current directory, as for ``drsom-run``; for a
checkout's ``scripts/<tool>.py`` and ``run.py`` the repository root (``checkout_root``, the one
place that rule is written), wherever they are launched.

The top room: may import every other; nothing imports it.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from pathlib import Path


def checkout_root(script: str | os.PathLike) -> Path:
    """The repository root of a checkout's ``script``: the nearest folder above it that holds
    ``pyproject.toml`` (``run.py`` lies in it, ``scripts/<tool>.py`` one level down)."""
    for folder in Path(script).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"{script} is not in a checkout of the suite (no pyproject.toml above)")


def checkout_main(tool: str, script: str | os.PathLike) -> Callable[..., int]:
    """``drsom.tools.<tool>.main`` with its paths under the root of the checkout holding
    ``script``: what ``scripts/<tool>.py`` runs (and exposes as its ``main``)."""
    module = importlib.import_module(f"drsom.tools.{tool}")
    return functools.partial(module.main, base_dir=checkout_root(script))
