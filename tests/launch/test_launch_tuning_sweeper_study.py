"""Stored tuning studies (drsom/launch/tuning_sweeper.py, drsom/store/study.py): failed trials,
relaunches, two launches at once, refusals that leave the study as it was, pruning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from run_helpers import REPO

from drsom.analysis.runs import load_store
from drsom.store.folder import RunDir
from drsom.store.state import Status, run_state
from drsom.store.study import open_storage

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parents[1] / "helpers"  # trial_plugins.py
TINY = [
    "experiment=tune_digits_cnn",
    "optimizer=sgd",
    "data.train_subset=64",
    "trainer.epochs=1",
    "trainer.lr_milestones=[]",
    "trainer.batch_size=32",
    "logger.mode=disabled",
]
STUDY = "tune_digits_cnn-sgd"


def marked(marker: Path, mode: str) -> list[str]:
    """The CNN of tests/helpers/trial_plugins.py: the first trial to find ``marker`` fails or
    hangs."""
    return [
        "model._target_=trial_plugins.marked_cnn",
        f"+model.marker={marker}",
        f"+model.mode={mode}",
    ]


def command(results: Path, *overrides: str) -> list[str]:
    line = [sys.executable, str(REPO / "run.py"), "-m", *TINY, *overrides]
    return line + [f"results_dir={results / 'runs'}", f"hydra.sweep.dir={results / 'sweep'}"]


def environment() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "0",
        "PYTHONPATH": path,
    }


def launch(results: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(results, *overrides),
        cwd=results,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def study_of(results: Path, name: str = STUDY) -> optuna.Study:
    storage = open_storage(str(results / "studies" / f"{name}.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_a_failing_trial_is_fail_and_the_study_still_ends_at_its_budget(tmp_path):
    marker = tmp_path / "fail-once"
    marker.touch()
    proc = launch(tmp_path, *marked(marker, "fail"), "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = study_of(tmp_path)
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    failed = study.trials[0]
    assert "this trial fails on purpose" in failed.user_attrs["error"]
    assert failed.params and failed.value is None  # drawn, never told a value
    finished = [r for r in load_store(tmp_path / "runs", report=lambda line: None)]
    assert sorted(r.run_id for r in finished if r.status == Status.FINISHED) == sorted(
        t.user_attrs["run_id"] for t in study.trials if t.state == TrialState.COMPLETE
    )
    out = proc.stdout + proc.stderr
    assert f"study {STUDY}: 3 complete, 0 pruned, 1 failed" in out

    # the study is complete: a relaunch opens it and trains nothing
    before = (tmp_path / "studies" / f"{STUDY}.journal").read_bytes()
    again = launch(tmp_path, *marked(marker, "fail"), "hydra.sweeper.n_trials=3")
    assert again.returncode == 0 and "Launching" not in again.stdout + again.stderr
    assert (tmp_path / "studies" / f"{STUDY}.journal").read_bytes() == before


def test_failures_beyond_the_rate_end_the_study_with_one_line_naming_the_runs(tmp_path):
    marker = tmp_path / "fail-once"
    marker.touch()
    rate = "hydra.sweeper.max_failure_rate=0"
    proc = launch(tmp_path, *marked(marker, "fail"), "hydra.sweeper.n_trials=3", rate)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (failed,) = study_of(tmp_path).trials
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: study {STUDY}: 1 failed trials, more than hydra.sweeper.max_failure_rate=0 of "
        f"the budget of 3 allows (0); failed runs: {failed.user_attrs['run_id']}. Fix the cause "
        "and relaunch with hydra.sweeper.max_failure_rate=0.33: the study continues"
    ]


def test_a_killed_study_relaunched_ends_at_its_budget_with_the_trials_of_an_unbroken_one(
    tmp_path,
):
    # n_startup_trials=1: trials 1 and 2 are TPE's, drawn from the trials before them
    sampler = ["hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=1"]
    marker = tmp_path / "hang-once"  # one path for both studies: their trials have one run id
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    proc = launch(whole, *marked(marker, "hang"), *sampler)
    assert proc.returncode == 0, proc.stderr[-3000:]

    marker.touch()  # the second trial of the broken study hangs; the launch is killed there
    marker_second = [*marked(marker, "hang"), *sampler]
    first = subprocess.Popen(
        command(broken, *marker_second),
        cwd=broken,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hanging = Path(f"{marker}.hanging")
    deadline = time.monotonic() + 120
    while not hanging.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hanging.exists(), "no trial hung"
    first.send_signal(signal.SIGKILL)
    first.wait()
    left = study_of(broken)
    assert states(left) == ["RUNNING"]  # the first trial to build found the marker

    proc = launch(broken, *marker_second)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "trial 0 (" in out and "left running by a launch that ended" in out
    resumed, unbroken = study_of(broken), study_of(whole)
    assert states(resumed) == states(unbroken) == ["COMPLETE"] * 3
    runs = [t.user_attrs["run_id"] for t in resumed.trials]
    assert runs == [t.user_attrs["run_id"] for t in unbroken.trials]
    assert [t.value for t in resumed.trials] == [t.value for t in unbroken.trials]
    assert len(set(runs)) == 3


def test_two_launches_at_once_train_each_trial_once_and_stop_at_the_budget(tmp_path):
    line = command(tmp_path, "hydra.sweeper.n_trials=4", "trainer.epochs=2")
    procs = [
        subprocess.Popen(
            [*line[:-1], f"hydra.sweep.dir={tmp_path / f'sweep{n}'}"],
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = study_of(tmp_path)
    assert states(study) == ["COMPLETE"] * 4
    store = load_store(tmp_path / "runs", report=lambda line: None)
    assert len(store) == 4 and all(r.status == Status.FINISHED for r in store)
    assert all(r.summary["attempts"] == 1 for r in store)  # none trained twice
    assert sorted(r.run_id for r in store) == sorted(t.user_attrs["run_id"] for t in study.trials)
    assert sum(o.count("Launching 1 jobs locally") for o in outs) == 4


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["trainer.epochs=2"],
            f"error: study {STUDY} has another fixed config: trainer.epochs was 1, this launch "
            "has 2 (accepted: the stored fixed config, or another hydra.sweeper.study_name for a "
            "new study)",
        ),
        (
            ["optimizer.lr=tag(log,interval(0.001,0.5))"],
            f"error: study {STUDY} has another search space: optimizer.lr was "
            "FloatDistribution(high=1.0, log=True, low=0.001, step=None), this launch has "
            "FloatDistribution(high=0.5, log=True, low=0.001, step=None)",
        ),
        (
            ["hydra.sweeper.objective=best"],
            f"error: study {STUDY} was run with hydra.sweeper.objective=final, this launch has "
            "best",
        ),
        (
            ["hydra.sweeper.n_trials=1"],
            f"error: hydra.sweeper.n_trials=1: the stored study {STUDY} has 2 finished trials "
            "already (accepted: n_trials >= 2",
        ),
    ],
)
def test_a_relaunch_that_is_not_the_stored_study_is_one_line_and_touches_nothing(
    tmp_path_factory, overrides, expected
):
    results = tmp_path_factory.getbasetemp() / "stored-study"
    journal = results / "studies" / f"{STUDY}.journal"
    if not journal.exists():  # one stored study of 2 trials for every case
        results.mkdir(exist_ok=True)
        made = launch(results, "hydra.sweeper.n_trials=2")
        assert made.returncode == 0, made.stderr[-3000:]
    before = journal.read_bytes()
    runs = sorted(p.name for p in (results / "runs").iterdir())
    proc = launch(results, "hydra.sweeper.n_trials=2", *overrides)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert journal.read_bytes() == before
    assert sorted(p.name for p in (results / "runs").iterdir()) == runs


def test_an_empty_results_dir_is_one_line_before_a_study_is_stored_anywhere(tmp_path):
    line = [a if not a.startswith("results_dir=") else "results_dir=''" for a in command(tmp_path)]
    proc = subprocess.run(
        line, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: results_dir='' is not a folder name; accepted: the folder the run folders go "
        "in, e.g. results_dir=results/runs"
    ]
    assert not (REPO.parent / "studies").exists() and not (REPO / "studies").exists()


TPE = {"_target_": "optuna.samplers.TPESampler", "seed": 0}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"max_failure_rate": 1.5},
            "hydra.sweeper.max_failure_rate=1.5: accepted: a share of the budget in [0, 1] "
            "(failed trials beyond it end the study)",
        ),
        (
            {"max_failure_rate": -0.1},
            "hydra.sweeper.max_failure_rate=-0.1: accepted: a share of the budget in [0, 1]",
        ),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0: accepted: a positive number of trials"),
        ({"objective": "mean"}, "hydra.sweeper.objective='mean': accepted: final, best"),
        (
            {"pruner": {"_target_": "optuna.samplers.RandomSampler"}},
            "hydra.sweeper.pruner._target_=optuna.samplers.RandomSampler: not an optuna pruner "
            "(accepted: a _target_ node of optuna.pruners, e.g. optuna.pruners.MedianPruner)",
        ),
        (
            {"pruner": {"_target_": "nowhere.Pruner"}},
            "hydra.sweeper.pruner: Error loading 'nowhere.Pruner'",
        ),
        (
            {"sampler": {"_target_": "optuna.pruners.MedianPruner", "seed": 0}},
            "hydra.sweeper.sampler: ",  # MedianPruner takes no seed: instantiating it fails
        ),
    ],
)
def test_the_sweepers_own_settings_are_one_line_each(settings, expected):
    from omegaconf import OmegaConf

    from drsom.launch.tuning import TuningError
    from drsom.launch.tuning_sweeper import TuningSweeper

    given = {"sampler": TPE} | settings
    nodes = {k: OmegaConf.create(v) if isinstance(v, dict) else v for k, v in given.items()}
    with pytest.raises(TuningError) as caught:
        TuningSweeper(**nodes).check_settings()
    assert str(caught.value).startswith(expected)
    pruner = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner"})
    sampler, checked = TuningSweeper(sampler=OmegaConf.create(TPE), pruner=pruner).check_settings()
    assert (sampler, checked) == (TPE, pruner)


def test_a_storage_that_cannot_be_written_is_one_line(tmp_path):
    from drsom.launch.tuning import TuningError
    from drsom.launch.tuning_sweeper import check_writable

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TuningError) as caught:
        check_writable(blocker / "deeper" / "study.journal")
    assert str(caught.value) == (
        f"hydra.sweeper.storage={blocker}/deeper/study.journal: cannot write there ({blocker} is "
        "a file); accepted: a writable file path, or an optuna database URL (sqlite:///..., "
        "postgresql://...)"
    )
    check_writable(tmp_path / "new" / "study.journal")  # a folder it can make: fine
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())


def test_a_pruned_trial_is_its_own_status_kept_and_never_trained_again(tmp_path):
    pruner = (
        "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.99,"
        "n_warmup_steps:0}"
    )  # every trial's first epoch is below 99% on 64 images: all are pruned after epoch 1
    line = ["hydra.sweeper.n_trials=2", "trainer.epochs=3", pruner]
    proc = launch(tmp_path, *line)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = study_of(tmp_path)
    assert states(study) == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in study.trials)
    for t in study.trials:
        rd = RunDir(tmp_path / "runs" / t.user_attrs["run_id"])
        state = run_state(rd)
        assert state.status == Status.PRUNED and state.summary["epoch"] == 1
        assert t.user_attrs["epochs"] == 1
        assert t.intermediate_values[1] == pytest.approx(state.summary["final"]["val_acc"])
    out = proc.stdout + proc.stderr
    assert "pruned after epoch 1/3 by the study's pruner" in out
    assert f"study {STUDY}: 0 complete, 2 pruned, 0 failed, 0 running (budget 2); 2 epochs" in out

    again = launch(tmp_path, *line)  # pruned counts in the budget: nothing to do
    assert again.returncode == 0 and "Launching" not in again.stdout + again.stderr


def test_select_refuses_a_study_that_disagrees_with_the_store_naming_the_run():
    from drsom.store.study import disagreement

    study = optuna.create_study(direction="maximize", study_name="s")
    for rid, value in (("run-a", 0.9), ("run-b", 0.8)):
        trial = study.ask()
        trial.set_user_attr("run_id", rid)
        study.tell(trial, value)
    pruned = study.ask()
    pruned.set_user_attr("run_id", "run-c")
    study.tell(pruned, state=TrialState.PRUNED)
    agree = {"run-a": ("finished", 0.9), "run-b": ("diverged", 0.8), "run-c": ("pruned", None)}
    assert disagreement(study, agree) is None
    assert disagreement(study, {**agree, "run-b": ("finished", 0.85)}) == (
        "study s: run run-b scores 0.85 in the store, 0.8 in the study (trial 1)"
    )
    assert disagreement(study, {**agree, "run-c": ("finished", 0.7)}) == (
        "study s: run run-c is finished in the store, pruned in it"
    )
    del agree["run-a"]
    assert disagreement(study, agree) == "study s: trial 0's run run-a is not in the store"


def test_figures_draw_each_stored_studys_history_and_slices(tmp_path):
    from drsom.analysis.studies import draw_studies
    from drsom.store.study import describe

    storage = open_storage(str(tmp_path / "studies" / "t.journal"))
    study = optuna.create_study(study_name="t-adam", storage=storage, direction="maximize")
    study.set_user_attr("drsom", describe("final", "maximize", {}, {}))
    rng = __import__("random").Random(0)
    for _ in range(4):
        trial = study.ask()
        x = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        study.tell(trial, 1 - abs(rng.gauss(0, 0.1)) - x)
    written = draw_studies(tmp_path / "runs", tmp_path / "figures")
    names = sorted(p.name for p in written)
    assert names == [
        "t-adam-history.pdf",
        "t-adam-history.png",
        "t-adam-slice.pdf",
        "t-adam-slice.png",
    ]
    assert all(p.stat().st_size > 1000 for p in written)


def test_a_cut_journal_is_repaired_by_the_relaunch_and_a_damaged_one_refused_in_one_line(tmp_path):
    journal = tmp_path / "studies" / f"{STUDY}.journal"
    made = launch(tmp_path, "hydra.sweeper.n_trials=1")
    assert made.returncode == 0, made.stderr[-3000:]
    lines = journal.read_bytes().splitlines(keepends=True)
    subprocess.run(["truncate", "-s", "-25", str(journal)], check=True)  # a writer killed

    proc = launch(tmp_path, "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        f"study journal {journal}: its last line was cut ({len(lines[-1]) - 25} bytes without a "
        f"line end, left by a writer that died); cut back to its last complete record (line "
        f"{len(lines) - 1})" in proc.stderr.splitlines()
    )
    assert "Traceback" not in proc.stderr
    assert journal.read_bytes().startswith(b"".join(lines[:-1]))
    assert states(study_of(tmp_path)) == ["COMPLETE", "COMPLETE"]  # trial 0 told again

    damaged = journal.read_bytes().replace(b"\n", b"\ngarbage\n", 1)
    journal.write_bytes(damaged)
    proc = launch(tmp_path, "hydra.sweeper.n_trials=3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: study journal {journal}: line 2 is not a JSON record; restore it from a copy, "
        "or move it aside and relaunch to start the study again (runs already in the store are "
        "not trained again)"
    ]
    assert "Traceback" not in proc.stderr and journal.read_bytes() == damaged
