"""The suite's command-line tools, thin: each parses its arguments and calls the room that does
the work (``drsom.analysis`` for tables, figures and selection; ``drsom.job`` to reproduce a run;
``drsom.store`` for a sweep's state). One name per tool, the module's: ``drsom <tool>`` (the
``drsom`` command, ``drsom.command``), with the aliases ``drsom-<tool>`` (console scripts),
``python -m drsom.tools.<tool>`` and a checkout's ``scripts/`` (the design card's names, kept:
``build_figures.py``, ``make_tables.py``, ``plot_curves.py``, ``select_tuned.py``,
``sweep_status.py``, ``reproduce.py``, ``export_wandb.py``). Default paths (``results/runs``,
``results/figures``, ...) and relative ``results_dir`` / ``data.root`` of composed configs are
taken from ``base_dir``: for a console script the current directory, as for ``drsom-run``; for a
checkout's ``scripts/<tool>.py`` and ``run.py`` the repository root (``checkout_root``, the one
place that rule is written), wherever they are launched.

Floor 5, beside ``drsom.launch``: may import every room below it, never ``launch``; only the
``drsom`` command (``drsom.command``, floor 6) imports it.
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


# ``drsom <name>``: the tool modules, in the order ``drsom --help`` lists them
TOOLS = {
    "figures": "every figure and table from the run store, replaced all at once (make figures)",
    "tables": "a results table per experiment, in Markdown, CSV and LaTeX",
    "curves": "accuracy and loss curves of an experiment's runs",
    "select": "each optimizer's best trial of a tuning experiment, as an optimizer config",
    "reproduce": "rerun a stored run and say whether it reproduces, column by column",
    "status": "where each run of a sweep stands",
    "export_wandb": "pull the runs of a wandb project into the local store",
}
