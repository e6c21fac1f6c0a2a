"""The experiment runner end to end on a tiny CIFAR-10 in the genuine format, on the CPU.

Most runs call ``drsom.job.runner.run`` in-process on a composed config; a few run ``python run.py``
for what only the command line shows (exit codes, one-line errors, no traceback). Everything is
written under tmp_path; wandb is disabled or offline and never reaches the network.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from run_helpers import assert_same_run, cli, only_run, read_csv, run_inprocess, tiny

from drsom.data import DatasetUnavailable
from drsom.job import runner
from drsom.job.validate import ConfigError
from drsom.store.folder import RunBusy, RunDir, atomic_file
from drsom.training.loop import METRIC_COLUMNS, STEP_COLUMNS, Trainer

REPO = Path(__file__).resolve().parents[2]
OPTIMIZERS = sorted(p.stem for p in (REPO / "configs" / "optimizer").glob("*.yaml"))
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------ every optimizer
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_config_trains_end_to_end(optimizer, cifar_root, tmp_path):
    assert run_inprocess(tiny(cifar_root, tmp_path, f"optimizer={optimizer}")) == "finished"
    rd = only_run(tmp_path)
    assert rd.name.startswith(f"cifar10-cnn-{optimizer}-") and rd.name.endswith("-s0")
    summary = json.loads(rd.summary.read_text())
    assert summary["status"] == "finished" and summary["epoch"] == 2
    assert summary["optimizer"] == optimizer and summary["compiled"] is False

    rows, steps = read_csv(rd.metrics), read_csv(rd.steps)
    # steps.csv: the loop's columns, then the optimizer's diagnostics; metrics.csv: the fixed
    # columns, then the epoch mean of each diagnostic, in the same order
    assert list(steps[0])[: len(STEP_COLUMNS)] == list(STEP_COLUMNS)
    own = list(steps[0])[len(STEP_COLUMNS) :]
    assert list(rows[0]) == [*METRIC_COLUMNS, *(f"{key}_mean" for key in own)]
    assert [int(s["step"]) for s in steps] == [3, 6]  # trainer.log_every_steps=3
    assert [int(s["epoch"]) for s in steps] == [1, 2]
    assert all(0.0 < float(s["loss"]) < 100.0 for s in steps)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [4, 8]  # 128 examples / batch 32
    for r in rows:
        for key in ("train_loss", "test_loss"):
            assert 0.0 < float(r[key]) < 100.0, (key, r[key])
        for key in ("train_acc", "test_acc"):
            assert 0.0 <= float(r[key]) <= 1.0
    forward, grad, hvp = (int(rows[-1][k]) for k in ("forward", "grad", "hvp"))
    assert summary["counts"] == {"forward": forward, "grad": grad, "hvp": hvp}
    if optimizer == "adahessian":  # one Hutchinson product per step
        assert (forward, grad, hvp) == (8, 8, 8) and own == []
    elif optimizer == "sophiah":  # refreshed on steps 0 (and 10, not reached)
        assert (forward, grad, hvp) == (8, 8, 1) and own == []
    elif optimizer == "drsom_adaptive":  # steps 1, 3 and 7 tested (at the bound): 3 trials
        assert (forward, grad, hvp) == (11, 8, 0) and {"tested", "undone"} <= set(own)
        assert float(rows[0]["tested_mean"]) == 0.5 and float(rows[1]["tested_mean"]) == 0.25
    elif optimizer.startswith("drsom"):  # a forward per trial on top of the gradient's
        assert forward >= 16 and grad >= 8
        assert hvp > 0 if optimizer in ("drsom_hvp", "drsom_official") else hvp == 0
        assert {"rho", "radius", "accepted", "trials"} <= set(own)
        assert float(rows[-1]["radius_mean"]) > 0 and 0 <= float(rows[-1]["accepted_mean"]) <= 1
        assert all(float(s["accepted"]) in (0.0, 1.0) for s in steps)
    else:  # any other optimizer is first order: a forward and a gradient per step, no diagnostics
        assert (forward, grad, hvp) == (8, 8, 0) and own == []
    assert rd.checkpoint.exists() and rd.config.exists()


# ---------------------------------------------------------------- the optimizer protocol
class ToyClosureOptimizer(torch.optim.Optimizer):
    """Gradient descent on a closure it evaluates twice a step (gradient, then the new point),
    with diagnostics, counts and a hyperparameter of its own: nothing the suite knows by name.

    ``foo`` is the step number; ``bar`` is defined on even steps only (NaN otherwise); with
    ``shifting=True`` even steps report ``baz`` instead of ``foo`` (keys that change mid-run).
    """

    step_protocol = "closure"

    def __init__(self, params, lr: float = 0.05, shifting: bool = False):
        super().__init__(params, {"lr": lr})
        self.taken, self.shifting, self.last = 0, shifting, {}

    @torch.no_grad()
    def step(self, closure):
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.add_(g, alpha=-self.param_groups[0]["lr"])
        closure()  # the second forward its counts report
        self.taken += 1
        n, even = float(self.taken), self.taken % 2 == 0
        if self.shifting:
            self.last = {"baz": n} if even else {"foo": n}
        else:
            self.last = {"foo": n, "bar": n if even else math.nan}
        return loss

    def step_counts(self):
        return {"forward": 2, "grad": 1}

    def step_diagnostics(self):
        return dict(self.last)

    def describe_hyperparameters(self):
        return {"flavour": "toy"}


def toy(*overrides: str) -> list[str]:
    """The SGD config turned into the toy optimizer by its import path (a user's plug-in)."""
    return [
        "optimizer=sgd",
        f"optimizer._target_={__name__}.ToyClosureOptimizer",
        *("~optimizer.momentum", "~optimizer.nesterov", "~optimizer.weight_decay"),
        "optimizer.lr=0.05",
        *overrides,
    ]


def test_an_optimizer_unknown_to_the_suite_is_stepped_counted_and_logged_by_its_protocol(
    cifar_root, tmp_path, caplog
):
    with caplog.at_level(logging.INFO, logger="drsom"):
        assert run_inprocess(tiny(cifar_root, tmp_path, *toy())) == "finished"
    rd = only_run(tmp_path)
    steps, rows = read_csv(rd.steps), read_csv(rd.metrics)
    assert list(steps[0]) == [*STEP_COLUMNS, "foo", "bar"]
    assert [(s["step"], s["foo"], s["bar"]) for s in steps] == [
        ("3", "3.0", ""),
        ("6", "6.0", "6.0"),
    ]
    assert list(rows[0]) == [*METRIC_COLUMNS, "foo_mean", "bar_mean"]
    # epoch 1 holds steps 1-4, epoch 2 steps 5-8; bar's NaNs are skipped: (2+4)/2, (6+8)/2
    assert [(r["foo_mean"], r["bar_mean"]) for r in rows] == [("2.5", "3.0"), ("6.5", "7.0")]
    assert [(r["forward"], r["grad"], r["hvp"]) for r in rows] == [
        ("8", "4", "0"),
        ("16", "8", "0"),
    ]
    summary = json.loads(rd.summary.read_text())
    assert summary["counts"] == {"forward": 16, "grad": 8, "hvp": 0}
    assert summary["optimizer_hyperparameters"] == {"lr": 0.05, "flavour": "toy"}
    assert "mean foo 2.5 bar 3  " in caplog.text  # the epoch line shows whatever it reports
    row = {"step": 3, "epoch": 1, "loss": 0.5, "foo": 3.0}
    assert runner._step_log(row) == {"step/epoch": 1, "step/loss": 0.5, "opt/foo": 3.0}


def test_diagnostic_keys_that_change_mid_run_keep_the_tables_header(cifar_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="drsom"):
        args = tiny(cifar_root, tmp_path, *toy("+optimizer.shifting=true"))
        assert run_inprocess(args) == "finished"
    rd = only_run(tmp_path)
    steps, rows = read_csv(rd.steps), read_csv(rd.metrics)
    assert list(steps[0]) == [*STEP_COLUMNS, "foo"]  # the first step's keys
    assert [(s["step"], s["foo"]) for s in steps] == [("3", "3.0"), ("6", "")]
    assert [r["foo_mean"] for r in rows] == ["2.0", "6.0"]  # (1+3)/2, (5+7)/2
    assert caplog.text.count("left out or empty") == 1 and "['baz', 'foo']" in caplog.text


def test_a_plain_torch_optimizer_is_counted_by_the_defaults(cifar_root, tmp_path):
    nadam = ["optimizer=sgd", "optimizer._target_=torch.optim.NAdam", "optimizer.lr=1e-3"]
    nadam += ["~optimizer.momentum", "~optimizer.nesterov"]
    assert run_inprocess(tiny(cifar_root, tmp_path, *nadam)) == "finished"
    rd = only_run(tmp_path)
    steps, rows = read_csv(rd.steps), read_csv(rd.metrics)
    assert list(rows[0]) == list(METRIC_COLUMNS) and list(steps[0]) == list(STEP_COLUMNS)
    assert [(r["forward"], r["grad"], r["hvp"]) for r in rows] == [("4", "4", "0"), ("8", "8", "0")]
    summary = json.loads(rd.summary.read_text())
    assert summary["counts"] == {"forward": 8, "grad": 8, "hvp": 0}
    hp = summary["optimizer_hyperparameters"]
    assert (hp["lr"], hp["momentum_decay"], hp["betas"]) == (1e-3, 4e-3, [0.9, 0.999])


def test_the_runs_learn(cifar_root, tmp_path):
    # A loop that misaligned images and labels, or stepped nothing, would stay near chance (0.1).
    run_inprocess(tiny(cifar_root, tmp_path, "optimizer=drsom", "trainer.epochs=3"))
    rows = read_csv(only_run(tmp_path).metrics)
    assert float(rows[-1]["train_loss"]) < 0.8 * float(rows[0]["train_loss"])
    assert float(rows[-1]["test_acc"]) >= 0.5


def test_trainer_switches_amp_channels_last_cosine_and_eval_every(cifar_root, tmp_path):
    args = tiny(cifar_root, tmp_path, "optimizer=drsom", "trainer.epochs=3")
    switches = ["trainer.amp=true", "trainer.channels_last=true", "trainer.lr_schedule=cosine"]
    assert run_inprocess([*args, *switches, "trainer.eval_every=2"]) == "finished"
    rd = only_run(tmp_path)
    rows = read_csv(rd.metrics)
    assert [r["test_acc"] != "" for r in rows] == [False, True, True]  # epoch 2, and the last
    lrs = [float(r["lr"]) for r in rows]  # DRSOM's step bound follows the cosine schedule
    bound = rd.read_config()["optimizer"]["lr"]
    assert lrs[0] == bound and lrs[0] > lrs[1] > lrs[2] > 0
    assert json.loads(rd.summary.read_text())["amp"] is True


# --------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("optimizer", ["drsom", "drsom_random", "adahessian", "sgd"])
def test_interrupted_run_resumes_to_exactly_the_uninterrupted_result(
    optimizer, cifar_root, tmp_path
):
    common = (f"optimizer={optimizer}", "trainer.epochs=3")
    assert run_inprocess(tiny(cifar_root, tmp_path / "whole", *common)) == "finished"
    parts = tmp_path / "parts"
    stopped = run_inprocess(tiny(cifar_root, parts, *common, "trainer.stop_after_epochs=1"))
    assert stopped == "interrupted"
    assert len(read_csv(only_run(parts).metrics)) == 1
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    assert run_inprocess(tiny(cifar_root, parts, *common)) == "finished"

    whole, resumed = only_run(tmp_path / "whole"), only_run(parts)
    assert_same_run(resumed, whole)
    summary = json.loads(resumed.summary.read_text())
    assert (summary["attempts"], summary["resumed_from_epoch"]) == (2, 1)


def test_finished_run_is_skipped_and_force_redoes_it(cifar_root, tmp_path, monkeypatch, caplog):
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "trainer.epochs=1")
    run_inprocess(args)
    rd = only_run(tmp_path)
    first = json.loads(rd.summary.read_text())

    def no_training(self):
        raise AssertionError("a finished run was trained again")

    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="drsom"):
        m.setattr(Trainer, "run_epochs", no_training)
        assert run_inprocess(args) == "finished"
    assert "already finished" in caplog.text and "force=true" in caplog.text

    assert run_inprocess([*args, "force=true"]) == "finished"
    again = json.loads(rd.summary.read_text())
    assert again["attempts"] == 1 and again["wandb_id"] != first["wandb_id"]


def test_unreadable_checkpoint_is_reported_and_the_run_starts_over(cifar_root, tmp_path, caplog):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    rd = only_run(tmp_path)
    rd.checkpoint.write_bytes(rd.checkpoint.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(args) == "finished"
    assert str(rd.checkpoint) in caplog.text and "starting from scratch" in caplog.text
    assert [r["epoch"] for r in read_csv(rd.metrics)] == ["1", "2"]


# ------------------------------------------------------------------------ bad situations
def test_divergence_is_recorded_and_ends_cleanly(cifar_root, tmp_path):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "optimizer.lr=1e12")
    assert run_inprocess(args) == "diverged"
    summary = json.loads(only_run(tmp_path).summary.read_text())
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert run_inprocess(args) == "diverged"  # a result like any other: not redone


def test_missing_dataset_says_where_it_looked(tmp_path):
    args = tiny(tmp_path / "nothing-here", tmp_path / "results", "optimizer=sgd")
    with pytest.raises(DatasetUnavailable, match="nothing-here.*data.root="):
        run_inprocess(args)


def test_train_subset_larger_than_the_data_is_a_config_error(cifar_root, tmp_path):
    with pytest.raises(ConfigError, match="train_subset=100000 exceeds"):
        run_inprocess(tiny(cifar_root, tmp_path, "data.train_subset=100000"))


def test_a_second_process_cannot_train_the_same_run(tmp_path):
    rd = RunDir(tmp_path / "run")
    with rd.locked(), pytest.raises(RunBusy, match=f"pid {os.getpid()}"), RunDir(rd.path).locked():
        pass


def test_compile_is_refused_for_double_backward_and_recorded(cifar_root, tmp_path, caplog):
    args = tiny(cifar_root, tmp_path, "optimizer=drsom_hvp", "trainer.epochs=1")
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess([*args, "trainer.compile=true"]) == "finished"
    summary = json.loads(only_run(tmp_path).summary.read_text())
    assert summary["compiled"] is False and "double backward" in summary["compile_note"]
    assert "trainer.compile ignored" in caplog.text


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_file(target, "w") as f:
        f.write("half a new fi")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary left over


# ------------------------------------------------------------------------------------ wandb
class FakeRun:
    def __init__(self, fail_log: bool = False):
        self.logged: list[tuple[int, dict]] = []
        self.finished: list[int] = []
        self.summary: dict = {}
        self.step = 0
        self.fail_log = fail_log

    def log(self, data, step):
        if self.fail_log:
            raise ConnectionError("wandb.ai unreachable")
        self.logged.append((step, data))

    def finish(self, exit_code=0):
        self.finished.append(exit_code)


def fake_wandb(monkeypatch, run: FakeRun | None, inits: list[dict]) -> None:
    def init(**kwargs):
        inits.append(kwargs)
        if run is None:
            raise RuntimeError("wandb.init timed out")
        return run

    module = types.SimpleNamespace(init=init, Settings=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", module)


def test_wandb_failing_to_start_is_a_warning(cifar_root, tmp_path, monkeypatch, caplog):
    inits: list[dict] = []
    fake_wandb(monkeypatch, None, inits)
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "trainer.epochs=1", "logger.mode=offline")
    with caplog.at_level(logging.WARNING):
        assert run_inprocess(args) == "finished"
    assert len(inits) == 1 and "wandb: could not start (RuntimeError" in caplog.text


def test_wandb_failing_mid_run_is_a_warning_and_the_run_is_finished(
    cifar_root, tmp_path, monkeypatch, caplog
):
    run = FakeRun(fail_log=True)
    fake_wandb(monkeypatch, run, [])
    args = tiny(cifar_root, tmp_path, "optimizer=drsom", "trainer.epochs=2", "logger.mode=offline")
    with caplog.at_level(logging.WARNING):
        assert run_inprocess(args) == "finished"
    assert caplog.text.count("wandb: log failed (ConnectionError") == 1
    assert run.finished == [1]
    assert json.loads(only_run(tmp_path).summary.read_text())["status"] == "finished"


def test_wandb_mirrors_the_run_and_resumes_the_same_wandb_run(cifar_root, tmp_path, monkeypatch):
    run, inits = FakeRun(), []
    fake_wandb(monkeypatch, run, inits)
    args = tiny(cifar_root, tmp_path, "optimizer=drsom", "trainer.epochs=2", "logger.mode=offline")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    run_inprocess(args)
    assert inits[0]["id"] == inits[1]["id"] and inits[0]["resume"] == "allow"
    rd = only_run(tmp_path)
    assert inits[0]["name"] == rd.name and inits[0]["dir"] == str(rd.path)
    assert inits[0]["group"] == rd.name.rsplit("-s", 1)[0]
    assert {"cifar10", "cnn", "drsom", "default"} <= set(inits[0]["tags"])
    config = inits[0]["config"]
    assert config["trainer.epochs"] == 2 and config["optimizer.hessian"] == "adam"  # flat, resolved
    assert run.finished == [0, 0]
    epochs = [d["epoch"] for _, d in run.logged if "epoch" in d and "train_loss" in d]
    assert epochs == [1, 2]
    assert any("opt/rho" in d and "step/loss" in d for _, d in run.logged)  # DRSOM's steps
    assert json.loads(rd.summary.read_text())["wandb_id"] == inits[0]["id"]


def test_real_wandb_offline_run_is_written_in_the_run_folder_and_resumed(cifar_root, tmp_path):
    wandb = pytest.importorskip("wandb")
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2", "logger.mode=offline")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    run_inprocess(args)
    rd = only_run(tmp_path)
    wandb_id = json.loads(rd.summary.read_text())["wandb_id"]
    attempts = sorted((rd.path / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(p.name.endswith(f"-{wandb_id}") for p in attempts)
    assert wandb.run is None  # finished: nothing leaks into the next run of the process


def test_wandb_run_is_finished_when_training_fails(cifar_root, tmp_path, monkeypatch):
    run = FakeRun()
    fake_wandb(monkeypatch, run, [])

    def broken(self):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(Trainer, "train_epoch", broken)
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "logger.mode=offline")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        run_inprocess(args)
    assert run.finished == [1]
    summary = json.loads(only_run(tmp_path).summary.read_text())
    assert summary["status"] == "failed" and "illegal memory access" in summary["error"]


# ---------------------------------------------------------------------------- command line


def test_cli_run_prints_epochs_and_skips_when_finished(cifar_root, tmp_path):
    args = tiny(cifar_root, tmp_path / "results", "optimizer=drsom", "trainer.epochs=1")
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stdout + done.stderr and "finished" in done.stdout + done.stderr
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr
    assert (tmp_path / "hydra").is_dir()  # Hydra's own log went where it was told


def test_cli_divergence_exits_zero(cifar_root, tmp_path):
    out = cli(*tiny(cifar_root, tmp_path / "r", "optimizer=sgd", "optimizer.lr=1e12"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "diverged" in out.stdout + out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.epochs=0"], "error: trainer.epochs must be a positive integer, got 0"),
        (["data.root={missing}"], "error: CIFAR-10 not found under {missing}"),
        (["trainer.device=cuda"], "error: trainer.device=cuda but no CUDA device is available"),
    ],
    ids=["bad-value", "missing-dataset", "no-cuda"],
)
def test_cli_bad_input_is_one_line_and_exit_2(overrides, expected, cifar_root, tmp_path):
    if "cuda" in expected and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    missing = tmp_path / "no-cifar"
    overrides = [o.format(missing=missing) for o in overrides]
    out = cli(*tiny(cifar_root, tmp_path / "r", *overrides), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(expected.format(missing=missing)), lines
    assert not (tmp_path / "r").exists()  # rejected before a run folder was made


def test_cli_unknown_key_is_hydras_message_without_traceback(tmp_path):
    out = cli("trainer.epochz=3", cwd=tmp_path)
    assert out.returncode != 0
    assert "epochz" in out.stderr and "Traceback" not in out.stderr
