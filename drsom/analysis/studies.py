"""Figures of the stored tuning studies (``<store>/../studies``): what the budget bought.

Per study, with optuna's own matplotlib plots: the optimization history (each trial's score and
the best so far, against the trial number) and a slice plot (each searched value against the
score), as PNG and PDF. Pruned and failed trials have no score and are left out by optuna.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from drsom.analysis import figures


def study_files(results: Path) -> list[Path]:
    """The journal files of the studies kept beside the run store ``results``."""
    from drsom.store.study import STUDIES

    folder = results.parent / STUDIES
    return sorted(folder.glob("*.journal")) if folder.is_dir() else []


def draw_studies(results: Path, out: Path) -> list[Path]:
    """``<out>/<study>-history`` and ``<out>/<study>-slice`` for every study with a score."""
    import optuna
    from optuna.trial import TrialState

    from drsom.store.study import load_studies

    written = []
    for path in study_files(results):
        for study in load_studies(path):
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not done:
                continue
            label = _objective_label(study)
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = optuna.visualization.matplotlib.plot_optimization_history(
                    study, target_name=label
                )
                ax.set_title(f"{study.study_name}: {_counts(study)}")
                ax.legend(loc="best")  # optuna puts it outside the axes, squeezing them
                ax.figure.tight_layout()
                written += figures.save(ax.figure, out / f"{study.study_name}-history")
                axes = np.atleast_1d(
                    optuna.visualization.matplotlib.plot_slice(study, target_name=label)
                )
                axes[0].figure.suptitle(f"{study.study_name}: score against each searched value")
                written += figures.save(axes[0].figure, out / f"{study.study_name}-slice")
            plt.close("all")
    return written


def _objective_label(study) -> str:
    record = study.user_attrs.get("drsom") or {}
    final = record.get("objective", "final") == "final"
    return f"validation accuracy ({'final epoch' if final else 'validation-selected epoch'})"


def _counts(study) -> str:
    from optuna.trial import TrialState

    from drsom.store.study import tally

    n = tally(study.get_trials(deepcopy=False))
    text = f"{n[TrialState.COMPLETE]} complete"
    if n[TrialState.PRUNED]:
        text += f", {n[TrialState.PRUNED]} pruned"
    if n[TrialState.FAIL]:
        text += f", {n[TrialState.FAIL]} failed"
    return text
