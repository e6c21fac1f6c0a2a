"""The experiment files (``experiments/<name>.yaml``, a study's grid and what is read about it):
their names, their ``study`` node and whether one is a tuning study, read without a launch.

An experiment file is the suite's workload: besides the grid the runs are launched from, it
declares what the analysis reads about it and the runs never do (its ``study`` node: runs of other
experiments shown beside its own, the baseline of paired differences, the target accuracies).
"""

from __future__ import annotations

from typing import Any

from drsom import CONFIG_DIR

# The package's own experiments (``experiments/`` in a checkout is a link to this folder).
EXPERIMENT_DIR = CONFIG_DIR / "experiment"

# hydra/sweeper=tuning's class (drsom.launch.tuning_sweeper, found through hydra_plugins/)
TUNING_SWEEPER = "hydra_plugins.drsom_tuning_sweeper.TuningSweeper"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))


def study_of(name: str) -> dict[str, Any]:
    """The ``study`` node of ``experiments/<name>.yaml``: what the analysis reads about the
    experiment and the run never does (``reuse``: runs of other experiments shown beside its own;
    ``baseline``: the optimizer label its paired differences are taken against; ``targets``: the
    test accuracies its "to reach" columns and performance profiles use). Empty for an experiment
    without one or without a file."""
    from omegaconf import OmegaConf

    path = EXPERIMENT_DIR / f"{name}.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path)).get("study") or {}


def is_tuning(experiment: str) -> bool:
    """Whether ``experiment=<experiment>`` launches the tuning sweeper (its runs: trials); False
    for a name without an experiment file (runs exported under another study name)."""
    from drsom.cfg.compose import suite_config

    if not (EXPERIMENT_DIR / f"{experiment}.yaml").is_file():
        return False
    cfg = suite_config([f"experiment={experiment}"], hydra=True, resolve=False)
    return cfg["hydra"]["sweeper"].get("_target_") == TUNING_SWEEPER
