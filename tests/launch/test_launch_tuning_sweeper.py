"""The tuning sweeper's verdict on a trial whose job ended but whose run did not finish
(drsom/launch/tuning_sweeper.py, ``TuningSweeper.tell`` through ``optimize``).

A job can end without an error while its run is ``interrupted`` (stopped after
``trainer.stop_after_epochs``, or preempted) or ``failed``: the trial then has no score. The
sweeper tells optuna FAIL (never COMPLETE with a value, never PRUNED, never left RUNNING), notes
why on the trial, counts it against ``max_failure_rate``, and draws new trials until the budget's
trials are complete. Driven here by a scripted launcher on an in-memory study, and once through a
real launch.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from run_helpers import REPO

from drsom.launch.tuning_sweeper import Plan, TuningSweeper
from drsom.store.folder import RunDir
from drsom.store.state import Status, run_state
from drsom.store.study import open_storage

STUDY = "verdicts"


class Scripted:
    """A launcher whose n-th job ends (COMPLETED) with its run in ``statuses[n]``; a finished
    run scores 0.5 + n / 100."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses, self.launched = statuses, []

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for overrides in job_overrides:
            n = len(self.launched)
            self.launched.append(list(overrides))
            status = self.statuses[n]
            score = 0.5 + n / 100 if status in ("finished", "diverged") else None
            ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
            ret.return_value = {"status": status, "score": score, "epochs": 1, "run_id": f"r{n}"}
            returns.append(ret)
        return returns


def optimize(tmp_path: Path, statuses: list[str], *, n_trials: int, rate: float):
    sweeper = TuningSweeper(n_trials=n_trials, n_jobs=1, max_failure_rate=rate, study_name=STUDY)
    sweeper.launcher = Scripted(statuses)
    numbers = itertools.count()
    sweeper.run_id = lambda overrides: f"r{next(numbers)}"  # trial n trains run r<n>
    plan = Plan(
        space={"optimizer.lr": FloatDistribution(1e-3, 1.0, log=True)},
        fixed=["optimizer=sgd"],
        record={},
        storage=str(tmp_path / f"{STUDY}.journal"),
        launches=tmp_path / "launches",
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0}),
        pruner=None,
        backend=optuna.storages.InMemoryStorage(),
    )
    study = optuna.create_study(study_name=STUDY, storage=plan.backend, direction="maximize")
    return sweeper, study, plan


@pytest.mark.parametrize("ended", ["interrupted", "failed"])
def test_a_trial_whose_run_did_not_finish_is_failed_and_the_budget_drawn_anew(
    ended, tmp_path, caplog
):
    sweeper, study, plan = optimize(tmp_path, [ended, "finished", "finished"], n_trials=2, rate=0.5)
    with caplog.at_level(logging.INFO, logger="drsom"):
        sweeper.optimize(study, plan)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    failed = trials[0]
    assert failed.value is None and failed.params  # drawn, never told a value
    assert failed.user_attrs["status"] == ended and failed.user_attrs["run_id"] == "r0"
    assert failed.user_attrs["error"] == f"run r0: {ended}"
    assert [t.value for t in trials[1:]] == [0.51, 0.52]  # the budget: two complete trials
    assert len(sweeper.launcher.launched) == 3  # one more job than the budget, none after it
    assert f"trial 0 failed: run r0 {ended}" in caplog.text
    assert (
        f"study {STUDY}: 2 complete, 0 pruned, 1 failed, 0 running (budget 2); 3 epochs trained; "
        "best: 0.5200 (trial 2, run r2)"
    ) in caplog.text


@pytest.mark.parametrize("ended", ["interrupted", "failed"])
def test_a_trial_whose_run_did_not_finish_counts_against_the_failure_budget(ended, tmp_path):
    sweeper, study, plan = optimize(tmp_path, [ended, "finished"], n_trials=2, rate=0.0)
    with pytest.raises(SystemExit) as stopped:
        sweeper.optimize(study, plan)
    assert str(stopped.value.code).startswith(
        f"error: study {STUDY}: 1 failed trials, more than hydra.sweeper.max_failure_rate=0.0 of "
        "the budget of 2 allows (0); failed runs: r0."
    )
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert len(sweeper.launcher.launched) == 1  # nothing launched after the budget was spent


def test_a_real_trial_stopped_after_its_first_epoch_is_a_failed_trial(tmp_path):
    """``trainer.stop_after_epochs=1`` of 2: the job ends well, its run is ``interrupted``."""
    pytest.importorskip("sklearn")  # the digits
    line = [
        *(sys.executable, str(REPO / "run.py"), "-m", "experiment=tune_digits_cnn"),
        *("optimizer=sgd", "data.train_subset=64", "trainer.epochs=2"),
        *("trainer.stop_after_epochs=1", "trainer.lr_milestones=[]", "logger.mode=disabled"),
        *("hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0"),
        *(f"results_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"),
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(line, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    journal = tmp_path / "studies" / "tune_digits_cnn-sgd.journal"
    study = optuna.load_study(study_name="tune_digits_cnn-sgd", storage=open_storage(str(journal)))
    (trial,) = study.trials
    rid = trial.user_attrs["run_id"]
    assert trial.state == TrialState.FAIL and trial.value is None
    assert trial.user_attrs["error"] == f"run {rid}: interrupted"
    state = run_state(RunDir(tmp_path / "runs" / rid))
    assert state.status == Status.INTERRUPTED and state.summary["epoch"] == 1
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(
        "error: study tune_digits_cnn-sgd: 1 failed trials, more than "
        "hydra.sweeper.max_failure_rate=0 of the budget of 2 allows (0); failed runs: "
        f"{rid}. "
    )
