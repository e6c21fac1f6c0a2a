"""Small tuning-study journals for the tests of drsom/store/journal.py: one written as the
sweeper writes it, and what the store's readers see in one."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from drsom.store.study import describe, load_studies, open_storage


def make_study(path: Path, name: str = "s", trials: int = 4) -> None:
    """A study as the sweeper stores one: its record, trials with a drawn (seeded) value and a
    run id, an intermediate value each, told a score (every third one pruned)."""
    study = optuna.create_study(study_name=name, storage=open_storage(str(path)))
    study.set_user_attr("drsom", describe("final", "maximize", {}, {"seed": "0"}))
    study.sampler = optuna.samplers.RandomSampler(seed=0)
    for k in range(trials):
        trial = study.ask()
        lr = trial.suggest_float("optimizer.lr", 1e-3, 1.0, log=True)
        trial.set_user_attr("run_id", f"run-{k}")
        trial.report(0.5 - lr / 10, 1)
        if k % 3 == 2:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, 1 - lr)


def seen(path: Path) -> list[tuple]:
    """Every study of the journal at ``path`` as the store's readers see it (a fresh reader):
    its name, user attributes and each trial's number, state, value, parameters, intermediate
    values and user attributes."""
    return [
        (
            s.study_name,
            s.user_attrs,
            *[
                (t.number, t.state, t.value, t.params, t.intermediate_values, t.user_attrs)
                for t in s.trials
            ],
        )
        for s in load_studies(path)
    ]
