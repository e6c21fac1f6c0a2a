"""The tuning protocol: hydra/sweeper=tuning (drsom/launch/tuning.py), drsom-select, the final
stage."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from analysis_store import write_weights
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from run_helpers import REPO

from drsom.analysis import tuned
from drsom.analysis.runs import Run, load_store
from drsom.cfg.compose import suite_config
from drsom.cfg.experiments import is_tuning
from drsom.launch.tuning import (
    TuningError,
    check_budget,
    check_search_space,
    check_validation_split,
)
from drsom.store.state import objective
from drsom.tools import curves as curves_tool
from drsom.tools import select as select_tool
from drsom.tools import tables as tables_tool

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "experiment=tune_digits_cnn",
    "data.train_subset=64",
    "trainer.epochs=1",
    "trainer.lr_milestones=[]",
    "trainer.batch_size=32",
    "logger.mode=disabled",
]


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    line = [sys.executable, str(REPO / "run.py"), "-m", *TINY, *overrides]
    line += [f"results_dir={tmp_path / 'runs'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return subprocess.run(line, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer=adam", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: the tuning"),
        (["optimizer=sgd", "optimizer.foo=interval(0,1)"], "optimizer.foo is not a key"),
    ],
)
def test_a_bad_tuning_launch_is_one_line_before_anything_trains(tmp_path, overrides, expected):
    proc = launch(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


def job_config(*overrides: str):
    """The composed config of a trial (hydra node left out), as the sweeper checks it."""
    return OmegaConf.create(suite_config(["experiment=tune_digits_cnn", *overrides]))


@pytest.mark.parametrize(
    ("optimizer", "space", "expected"),
    [
        ("adam", "optimizer.lr=interval(0.1,0.1)", "optimizer.lr=interval(0.1,0.1) is an empty"),
        ("adam", "optimizer.lr=interval(0.2,0.1)", "is an empty range"),
        ("adam", "optimizer.lr=tag(log,interval(0,0.1))", "a log range needs 0 < low"),
        ("sgd", "optimizer.momentum=range(5,1)", "holds no value"),
        ("sgd", "optimizer.foo=interval(0,1)", "optimizer.foo is not a key of this run's config"),
        ("sgd", "model.widht=choice(1,2)", "model.widht is not a key"),
        ("sgd", "optimizer.lr=0.1", "no search space"),  # a fixed value is not a space
    ],
)
def test_the_search_space_rules(optimizer, space, expected):
    params = OverridesParser.create().parse_overrides([space])
    with pytest.raises(TuningError, match=re.escape(expected)):
        check_search_space(params, job_config(f"optimizer={optimizer}"))


def test_the_shipped_search_spaces_pass_and_the_budget_and_split_rules():
    for name in ("adam", "adamw", "adabelief", "yogi", "radam", "sgd", "drsom", "drsom_hvp"):
        cfg = suite_config([f"optimizer={name}", f"+search={name}"], hydra=True, resolve=False)
        space = cfg["hydra"]["sweeper"]["params"]
        assert len(space) == 2, name
        lines = [f"{k}={v}" for k, v in space.items()]
        check_search_space(
            OverridesParser.create().parse_overrides(lines), job_config(f"optimizer={name}")
        )
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(TuningError, match="the tuning budget must be a positive number"):
            check_budget(bad)
    check_budget(1)
    with pytest.raises(TuningError, match="data.val_size=0: tuning ranks trials on the"):
        check_validation_split(job_config("data.val_size=0"))
    check_validation_split(job_config())


@pytest.mark.parametrize(
    ("failed", "n_trials", "rate"),
    [(1, 3, 0), (2, 3, 0.25), (3, 8, 0.25), (5, 200, 0), (2, 1, 1), (3, 2, 0.25)],
    ids=["1of3", "2of3", "3of8", "5of200", "2of1", "3of2"],
)
def test_the_failure_budgets_advice_is_accepted_by_a_relaunch_which_goes_on(failed, n_trials, rate):
    """The relaunch the line advises, run: its values through Hydra's override parser and the
    sweeper's own checks (accepted), then the same failed trials checked again (the study goes
    on). More failures than the budget holds (2of1, 3of2): no rate in [0, 1] is enough."""
    import optuna
    from optuna.trial import TrialState

    from drsom.launch.tuning_sweeper import TuningSweeper

    sampler = OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 0})
    trials = [
        optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"run_id": f"run{i}"})
        for i in range(failed)
    ]
    given = {"n_trials": n_trials, "max_failure_rate": rate}
    with pytest.raises(SystemExit) as ended:
        TuningSweeper(sampler=sampler, **given).check_failures("s", trials)
    line = str(ended.value.code)
    assert line.startswith(f"error: study s: {failed} failed trials, more than ")
    advice = re.fullmatch(r".*relaunch with (\S+(?: hydra\.\S+)*).*: the study continues", line)
    assert advice, line
    relaunch = OverridesParser.create().parse_overrides(advice.group(1).split())
    settings = {o.key_or_group.removeprefix("hydra.sweeper."): o.value() for o in relaunch}
    assert set(settings) <= {"n_trials", "max_failure_rate"}, settings
    again = TuningSweeper(sampler=sampler, **given | settings)
    again.check_settings()  # the values are accepted (a TuningError otherwise)
    check_budget(again.n_trials)
    again.check_failures("s", trials)  # and the study goes on with the same failures


def test_a_trial_scores_its_validation_accuracy_never_the_test_set():
    done = {"status": "finished", "final": {"val_acc": 0.8, "test_acc": 0.99}}
    done["selected"] = {"epoch": 3, "val_acc": 0.85, "test_acc": 0.7}
    assert objective(done) == 0.8 and objective(done, "best") == 0.85
    assert objective({"status": "diverged", "final": {"val_acc": None}}) == 0.0
    assert math.isnan(objective({"status": "interrupted", "final": {"val_acc": 0.9}}))
    assert is_tuning("tune_digits_cnn") and not is_tuning("digits_drsom_vs_baselines_cnn")


def test_a_study_is_stored_runs_a_relaunch_skips_and_select_writes_the_winner(tmp_path):
    first = launch(tmp_path, "optimizer=adam", "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    store = load_store(tmp_path / "runs", report=lambda line: None)
    assert len(store) == 3 and all(r.status == "finished" for r in store)
    lrs = {r.config["optimizer"]["lr"] for r in store}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 3e-2 for lr in lrs)  # configs/search/adam.yaml
    scores = {r.run_id: r.summary["final"]["val_acc"] for r in store}

    # the study is stored (results/studies beside the runs): a relaunch trains nothing
    before = {r.run_id: (r.path / "metrics.csv").stat().st_mtime_ns for r in store}
    again = launch(tmp_path, "optimizer=adam", "hydra.sweeper.n_trials=3")
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert "Launching" not in out and "tune_digits_cnn-adam: 3 complete" in out, out[-3000:]
    assert (tmp_path / "studies" / "tune_digits_cnn-adam.journal").is_file()
    after = load_store(tmp_path / "runs", report=lambda line: None)
    assert {r.run_id: (r.path / "metrics.csv").stat().st_mtime_ns for r in after} == before

    table, configs = tuned.select(store, "tune_digits_cnn")
    (row,) = table.to_dict("records")
    losses = {r.run_id: r.summary["final"]["val_loss"] for r in store}
    best = min(scores, key=lambda rid: (-scores[rid], losses[rid], rid))
    assert row["run_id"] == best and row["score"] == pytest.approx(scores[best])
    # issue 21: the budget and space the launch ran under (its stored study), not the file's 8
    assert (row["trials"], row["finished"], row["budget"]) == (3, 3, 3)
    space = "optimizer.lr=[0.0001, 0.03] log; optimizer.weight_decay=[1e-06, 0.01] log"
    assert row["search_space"] == space

    out = tmp_path / "selected"
    rc = select_tool.main(
        ["--experiment", "tune_digits_cnn", "--results", str(tmp_path / "runs"), "--out", str(out)]
    )
    assert rc == 0 and (out / "tune_digits_cnn.selection.md").exists()
    written = yaml.safe_load((out / "optimizer" / "tune_digits_cnn" / "adam.yaml").read_text())
    winner = next(r for r in store if r.run_id == best)
    assert written["lr"] == winner.config["optimizer"]["lr"]
    # the final stage composes the winner's values over adam's own config
    search = f"hydra.searchpath=[file://{out}]"
    final = suite_config(["experiment=digits_tuned_cnn", "optimizer=tune_digits_cnn/adam", search])
    assert final["optimizer"]["lr"] == winner.config["optimizer"]["lr"]
    assert final["optimizer"]["betas"] == [0.9, 0.999] and final["optimizer"]["label"] == "adam"

    # make figures: the trials' table ends with the selection; no 3-line figure of trials
    write_weights(tmp_path / "cost_weights.json")
    tables, figs = tmp_path / "tables", tmp_path / "figures"
    assert tables_tool.main(["--results", str(tmp_path / "runs"), "--out", str(tables)]) == 0
    text = (tables / "tune_digits_cnn.md").read_text()
    assert "## tune_digits_cnn: tuned settings" in text
    assert f"optimizer.lr={winner.config['optimizer']['lr']:.4g}" in text.split("tuned settings")[1]
    assert (tables / "tune_digits_cnn.selection.csv").exists()
    assert curves_tool.main(["--results", str(tmp_path / "runs"), "--out", str(figs)]) == 0
    assert not list(figs.rglob("*.pdf"))


def test_equal_validation_accuracies_are_ranked_by_validation_loss(tmp_path):
    cfg = suite_config(["experiment=tune_digits_cnn", "optimizer=adam"])

    def trial(rid, status, val_acc, val_loss, lr):
        config = {**cfg, "optimizer": {**cfg["optimizer"], "lr": lr}}
        final = {"val_acc": val_acc, "val_loss": val_loss, "test_acc": 0.5}
        return Run(rid, tmp_path / rid, config, {"status": status, "final": final})

    runs = [
        trial("a", "finished", 1.0, 0.09, 1e-3),
        trial("b", "finished", 1.0, 0.02, 2e-3),  # tied on accuracy, lower loss: chosen
        trial("c", "finished", 0.99, 0.01, 3e-3),
        trial("d", "running", 1.0, 0.001, 4e-3),  # unfinished: counted, never ranked
        trial("e", "diverged", None, None, 5e-3),
    ]
    table, configs = tuned.select(runs, "tune_digits_cnn")
    (row,) = table.to_dict("records")
    assert (row["run_id"], row["score"], row["trials"], row["finished"]) == ("b", 1.0, 5, 3)
    assert row["diverged"] == 1 and yaml.safe_load(configs["adam"])["lr"] == 2e-3


def test_a_tuned_drsom_keeps_its_own_interpolations(tmp_path):
    folder = tmp_path / "optimizer" / "tune_x"
    folder.mkdir(parents=True)
    row = {"finished": 8, "budget": 8, "diverged": 0, "score": 0.9, "run_id": "r"}
    row["search_space"] = "optimizer.lr=..."
    text = tuned.tuned_config("drsom_hvp", {"optimizer.lr": 0.25}, row, "tune_x", "final")
    (folder / "drsom_hvp.yaml").write_text(text)
    cfg = suite_config(
        ["optimizer=tune_x/drsom_hvp", "seed=3", f"hydra.searchpath=[file://{tmp_path}]"]
    )
    assert cfg["optimizer"]["lr"] == 0.25 and cfg["optimizer"]["hessian"] == "hvp"
    assert cfg["optimizer"]["seed"] == 3  # ${seed}, not the trial's seed frozen in


def test_select_without_finished_trials_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    rc = select_tool.main(["--experiment", "tune_digits_cnn", "--results", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: experiment 'tune_digits_cnn' has no finished trials")
