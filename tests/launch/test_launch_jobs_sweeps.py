"""Sweeps that survive preemption, crashes and re-launches, on the CPU with a tiny CIFAR-10.

Multiruns are real ``python run.py -m ...`` processes with the ``local`` (submitit) and ``joblib``
launchers; preemption is SIGUSR2, the signal SLURM sends through submitit, delivered either to this
process (with a stand-in for submitit's handler) or to a real submitit job, which submitit then
requeues. Every file goes under tmp_path; wandb is disabled or offline.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from run_helpers import (
    assert_same_run,
    compose_config,
    only_run,
    read_csv,
    run_inprocess,
    summary_of,
    tiny,
    wait_for,
)

from drsom.job.preemption import PreemptionGuard
from drsom.store.folder import RunDir
from drsom.store.state import run_state
from drsom.store.sweeps import sweep_runs
from drsom.training.loop import Trainer

REPO = Path(__file__).resolve().parents[2]
USR2 = signal.SIGUSR2

# A study in the experiment format (experiments/<name>.yaml), kept out of the repository: the
# launches and the status script find it through hydra.searchpath.
TINY_EXPERIMENT = """\
# @package _global_
defaults:
  - override /data: cifar10
  - override /model: cnn
  - override /trainer: quick
experiment: tiny
data:
  val_size: 10   # of the fake CIFAR-10's 250 training images
hydra:
  sweeper:
    params:
      optimizer: sgd
      seed: 0,1
"""
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def searchpath(tmp_path_factory) -> str:
    extra = tmp_path_factory.mktemp("configs")
    (extra / "experiment").mkdir()
    (extra / "experiment" / "tiny.yaml").write_text(TINY_EXPERIMENT)
    return f"hydra.searchpath=[file://{extra}]"


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
        **extra,
    }


def launch(
    *args: str, cwd: Path, python_flags: tuple[str, ...] = (), environment: dict | None = None
) -> subprocess.Popen:
    """``python run.py *args`` in the background. Its output goes to files: a pipe nobody reads
    while the test watches the run folder would fill up and stall the process."""
    n = len(list(cwd.glob("launch-*.out")))
    logs = (cwd / f"launch-{n}.out", cwd / f"launch-{n}.err")
    with open(logs[0], "w") as out, open(logs[1], "w") as err:
        proc = subprocess.Popen(
            [sys.executable, *python_flags, str(REPO / "run.py"), *args],
            cwd=cwd,
            env=environment or env(),
            stdout=out,
            stderr=err,
        )
    proc.logs = logs
    return proc


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    """Wait for a ``launch`` to succeed; its (stdout, stderr)."""
    proc.wait(timeout=timeout)
    out, err = (path.read_text() for path in proc.logs)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def epochs_done(results: Path) -> int:
    """Rows in the metrics.csv of the run(s) under ``results`` (0 before there is one)."""
    try:
        return len(read_csv(next(results.glob("**/metrics.csv"))))
    except (StopIteration, FileNotFoundError):
        return 0


def sweep_status(*args: str) -> int:
    """drsom-status's main(), in this process (it prints to stdout)."""
    from drsom.tools import status

    return status.main(list(args))


def job_logs(sweep_dir: Path) -> str:
    """What the jobs of a sweep logged (Hydra's per-job run.log, submitit's job logs)."""
    files = [*sweep_dir.glob("*/run.log"), *sweep_dir.glob(".submitit/*/*_log.*")]
    return "\n".join(p.read_text() for p in files)


# ----------------------------------------------------------------- the checkpoint files
def test_checkpoint_files_survive_sigkill_at_any_moment(tmp_path):
    # A child saves checkpoints (4 MB each) in a loop and is killed at random moments, many
    # times; each time both names must hold a complete checkpoint, the newer one no older.
    rd = RunDir(tmp_path / "run")
    rng = random.Random(0)
    big = torch.randn(1_000_000)
    for _ in range(12):
        pid = os.fork()
        if pid == 0:  # the child: save until killed, never return into pytest
            try:
                i = rd.load_checkpoint()["trainer"]["i"] if rd.checkpoint.exists() else 0
                while True:
                    i += 1
                    rd.save_checkpoint({"trainer": {"i": i}, "big": big})
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not rd.checkpoint.exists():
            continue  # killed before the first save was complete
        new = rd.load_checkpoint()["trainer"]["i"]
        if rd.previous_checkpoint.exists():
            old = rd.load_checkpoint(rd.previous_checkpoint)["trainer"]["i"]
            assert new - old in (0, 1), (old, new)
        assert torch.equal(rd.load_checkpoint()["big"], big)
    assert rd.load_checkpoint()["trainer"]["i"] > 1  # the loop got somewhere
    rd.remove_temporaries()  # what a resumed run does first, under the lock
    assert {p.name for p in rd.path.iterdir()} == {"checkpoint.pt", "checkpoint.prev.pt"}


def test_truncated_checkpoint_falls_back_to_the_previous_one(cifar_root, tmp_path, caplog):
    common = ("optimizer=drsom", "trainer.epochs=3")
    run_inprocess(tiny(cifar_root, tmp_path / "whole", *common))
    args = tiny(cifar_root, tmp_path / "parts", *common)
    run_inprocess([*args, "trainer.stop_after_epochs=2"])  # checkpoints after epochs 1 and 2
    rd = only_run(tmp_path / "parts")
    assert rd.load_checkpoint(rd.previous_checkpoint)["trainer"]["epoch"] == 1
    rd.checkpoint.write_bytes(rd.checkpoint.read_bytes()[:1000])  # as a broken disk would leave it

    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(args) == "finished"
    assert f"cannot read checkpoint {rd.checkpoint}" in caplog.text
    assert (
        f"resuming from the previous checkpoint {rd.previous_checkpoint} (epoch 1)" in caplog.text
    )
    assert (rd.path / "checkpoint.corrupt.pt").exists()  # kept for a post-mortem
    assert_same_run(rd, only_run(tmp_path / "whole"))  # epoch 2 redone, not duplicated
    assert summary_of(rd)["resumed_from_epoch"] == 1


def test_no_readable_checkpoint_restarts_from_scratch_saying_so(cifar_root, tmp_path, caplog):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=3")
    run_inprocess([*args, "trainer.stop_after_epochs=2"])
    rd = only_run(tmp_path)
    rd.checkpoint.write_bytes(b"")
    rd.previous_checkpoint.write_bytes(b"\x80\x02not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="drsom"):
        assert run_inprocess(args) == "finished"
    assert str(rd.checkpoint) in caplog.text and str(rd.previous_checkpoint) in caplog.text
    assert "no readable checkpoint left" in caplog.text and "starting from scratch" in caplog.text
    assert [r["epoch"] for r in read_csv(rd.metrics)] == ["1", "2", "3"]
    assert summary_of(rd)["resumed_from_epoch"] == 0


# ------------------------------------------------------------------- the preemption hook
def test_guard_defers_the_signal_and_hands_it_over(monkeypatch):
    received = []
    previous = signal.signal(USR2, lambda signum, frame: received.append(signum))
    try:
        with PreemptionGuard(grace_s=0.3) as guard:
            os.kill(os.getpid(), USR2)
            assert guard.requested and received == []  # noted, not acted upon
            time.sleep(0.6)  # no safe point within grace_s: the repeat hands over by itself
            assert received == [USR2]
        assert signal.getsignal(USR2) is not guard._on_signal  # put back on exit
        with PreemptionGuard() as guard:
            os.kill(os.getpid(), USR2)
            guard.hand_over()  # what the runner does once the state is saved
        assert received == [USR2, USR2]
    finally:
        signal.signal(USR2, previous)


def test_guard_keeps_an_ignored_signal_ignored():
    previous = signal.signal(USR2, signal.SIG_IGN)
    try:
        with PreemptionGuard() as guard:
            assert signal.getsignal(USR2) == signal.SIG_IGN
            os.kill(os.getpid(), USR2)
            assert not guard.requested
    finally:
        signal.signal(USR2, previous)


def test_plain_process_saves_then_ends_by_the_signal():
    # Without submitit the signal's default action (terminate) happens, after the save.
    code = textwrap.dedent("""
        import os, signal
        from drsom.job.preemption import PreemptionGuard
        with PreemptionGuard() as guard:
            os.kill(os.getpid(), signal.SIGUSR2)
            print("saved", guard.requested, flush=True)
        guard.hand_over()
        print("still alive")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -USR2 and out.stdout == "saved True\n", out


@pytest.fixture(scope="module")
def uninterrupted(cifar_root, tmp_path_factory):
    """Reference runs (3 epochs of 4 steps), one per optimizer, trained once."""
    cache: dict[str, RunDir] = {}

    def get(optimizer: str) -> RunDir:
        if optimizer not in cache:
            results = tmp_path_factory.mktemp(f"whole-{optimizer}")
            args = tiny(cifar_root, results, f"optimizer={optimizer}", "trainer.epochs=3")
            assert run_inprocess(args) == "finished"
            cache[optimizer] = only_run(results)
        return cache[optimizer]

    return get


@pytest.mark.parametrize(
    ("optimizer", "at_step", "expect"),
    [
        ("drsom", 5, "mid-epoch"),  # epoch 2 after batch 1; DRSOM's log window is half full
        ("drsom_adaptive", 5, "mid-epoch"),  # step 5 was untested: its guard is still due
        ("adahessian", 6, "mid-epoch"),  # Hutchinson probes: the global RNG must resume too
        ("sgd", 6, "mid-epoch"),
        ("drsom", 4, "epoch boundary"),  # the last step of epoch 1: the epoch completes first
        ("drsom", 12, "finished"),  # the last step of the run: nothing left to requeue
    ],
)
def test_preemption_checkpoints_then_requeued_job_resumes_exactly(
    optimizer, at_step, expect, uninterrupted, cifar_root, tmp_path, monkeypatch
):
    args = tiny(cifar_root, tmp_path, f"optimizer={optimizer}", "trainer.epochs=3")
    handed_over = []

    def submitit_handler(signum, frame):
        # Stands in for submitit's handler (checkpoint(), requeue, exit): by the time it runs,
        # the state must be on disk and the folder released for the requeued job.
        rd = only_run(tmp_path)
        handed_over.append((signum, rd.is_locked(), summary_of(rd)["status"], rd.load_checkpoint()))

    step = Trainer._optimizer_step

    def step_then_signal(self, closure):
        step(self, closure)
        if self.step + 1 == at_step:  # SLURM's signal arrives during this step
            os.kill(os.getpid(), USR2)

    previous = signal.signal(USR2, submitit_handler)
    try:
        with monkeypatch.context() as m:
            m.setattr(Trainer, "_optimizer_step", step_then_signal)
            first = run_inprocess(args)
    finally:
        signal.signal(USR2, previous)
    rd = only_run(tmp_path)

    if expect == "finished":
        assert first == "finished" and handed_over == []
        assert_same_run(rd, uninterrupted(optimizer))
        return
    assert first == "interrupted"
    ((signum, locked, status, checkpoint),) = handed_over
    assert (signum, locked, status) == (USR2, False, "interrupted")
    state = checkpoint["trainer"]
    assert state["step"] == at_step
    if optimizer == "drsom_adaptive":  # the untested step's check travels with the checkpoint
        assert state["optimizer"]["state"]["drsom"]["ratio_test"]["pending"] is True
    if expect == "mid-epoch":
        assert state["epoch"] == (at_step - 1) // 4 and state["partial"]["batches"] == at_step % 4
    else:
        assert state["epoch"] == at_step // 4 and state["partial"] is None
    wandb_id = summary_of(rd)["wandb_id"]

    assert run_inprocess(args) == "finished"  # the requeued job: same command, same folder
    assert_same_run(rd, uninterrupted(optimizer))
    assert [int(r["epoch"]) for r in read_csv(rd.metrics)] == [1, 2, 3]
    s = summary_of(rd)
    assert (s["attempts"], s["wandb_id"], s["step"]) == (2, wandb_id, 12)


def test_sigkill_mid_training_then_rerun_matches_an_uninterrupted_run(
    uninterrupted, cifar_root, tmp_path
):
    results = tmp_path / "results"
    args = tiny(cifar_root, results, "optimizer=drsom", "trainer.epochs=3")
    proc = launch(*args, f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    try:
        wait_for(lambda: epochs_done(results) >= 1, "epoch 1")
        time.sleep(random.Random(1).uniform(0.0, 0.3))  # somewhere in epoch 2
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed or cleaned up
        proc.wait()
    rd = only_run(results)
    assert summary_of(rd)["status"] == "running"  # what the dead process left behind
    assert run_state(rd).status == "interrupted"  # ... and what a sweep's status shows for it
    assert run_inprocess(args) == "finished"
    assert_same_run(rd, uninterrupted("drsom"))
    assert summary_of(rd)["attempts"] == 2


# ---------------------------------------------------------------------------- sweeps
def test_run_states_as_the_status_script_sees_them(tmp_path):
    from drsom.store.identity import run_id

    seeds = iter(range(100))

    def folder(name: str, status: str | None, **extra) -> RunDir:
        # a folder named by its config's run id (a run's record names its config: run_state)
        cfg = compose_config("data=digits", "model=cnn", "optimizer=sgd", f"seed={next(seeds)}")
        rd = RunDir(tmp_path / run_id(cfg))
        rd.write_config(cfg)
        if status:
            final = {"test_acc": 0.5}
            rd.metrics.write_text("epoch,step,test_acc\n1,5,0.5\n")  # the rows, then the record
            rd.write_summary({"status": status, "epoch": 1, "epochs": 2, "final": final, **extra})
        return rd

    assert run_state(folder("done", "finished")).status == "finished"
    cut = folder("cut", "finished")
    cut.metrics.write_text("epoch,step,test_acc\n")  # its one epoch's row lost: not a result
    assert run_state(cut).status == "broken"
    assert run_state(cut).problem == "metrics.csv has 0 of the 1 epochs its summary.json reports"
    bad = folder("bad", None)
    bad.summary.write_text('{"status": "finished?"}')
    assert run_state(bad).status == "broken"
    assert run_state(folder("nan", "diverged", diverged_epoch=1)).status == "diverged"
    assert (
        run_state(folder("oom", "failed", error="RuntimeError: CUDA out of memory")).status
        == "failed"
    )
    assert run_state(folder("stopped", "interrupted")).status == "interrupted"
    assert run_state(folder("killed", "running")).status == "interrupted"  # nobody holds the lock
    assert run_state(RunDir(tmp_path / "never")).status == "missing"
    live, requeued, starting = (
        folder("live", "running"),
        folder("rq", "interrupted"),
        folder("new", None),
    )
    with live.locked(), requeued.locked(), starting.locked():
        assert [run_state(rd).status for rd in (live, requeued, starting)] == ["running"] * 3
    assert [run_state(rd).status for rd in (live, requeued, starting)] == [
        "interrupted",
        "interrupted",
        "missing",
    ]


def test_local_launcher_sweep_survives_a_preemption_and_relaunch_trains_nothing(
    cifar_root, searchpath, tmp_path
):
    # Two seeds, each a submitit job (its own process). Seed 0's job gets SIGUSR2 mid-training
    # (its pid is in the run folder's lock): our checkpoint, then submitit's checkpoint() and
    # requeue (the local executor restarts the job), and the requeued job resumes in the same
    # folder and the same wandb run (offline: one run id, two attempts).
    longer = ["optimizer=drsom", "trainer.epochs=3", "trainer.batch_size=16", "trainer.device=cpu"]
    longer += ["data.train_subset=240"]  # 15 steps per epoch: the signal lands mid-epoch
    grid = [searchpath, f"data.root={cifar_root}", *longer, f"results_dir={tmp_path / 'results'}"]
    sweep = ["-m", "hydra/launcher=local", "experiment=tiny", *grid]
    sweep += ["data.download=false", "data.verify=false", "logger.mode=offline"]
    seed0, seed1 = runs = sweep_runs("tiny", grid)
    reference = tmp_path / "whole"
    quiet = ["data.download=false", "data.verify=false", "logger.mode=disabled"]
    args = [*seed0.overrides, searchpath, *quiet, f"results_dir={reference}"]
    assert run_inprocess(args) == "finished"

    # -X importtime lists every module the launching process imports (the jobs are separate
    # processes with their own logs): torch and wandb must not be among them.
    proc = launch(
        *sweep,
        f"hydra.sweep.dir={tmp_path / 's1'}",
        cwd=tmp_path,
        python_flags=("-X", "importtime"),
        environment=env(WANDB_MODE="offline"),
    )
    try:
        wait_for(lambda: epochs_done(seed0.run_dir.path) >= 1, "epoch 1 of seed 0")
        os.kill(int(seed0.run_dir.lock_path.read_text().split()[1]), USR2)
    except BaseException:
        proc.kill()
        raise
    _, err = finish(proc)
    imported = re.findall(r"\|\s+([\w.]+)$", err, flags=re.M)
    assert "hydra" in imported and "submitit" in imported
    assert not {"torch", "wandb"} & set(imported)

    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [r.run_id for r in runs]
    logs = job_logs(tmp_path / "s1")
    assert "received SIGUSR2" in logs and "Requeued job" in logs
    assert re.search(
        rf"{seed0.run_id}: resuming (in epoch ./3 after batch .+/15|after epoch)", logs
    )
    assert_same_run(seed0.run_dir, only_run(reference))
    before = {}
    for run, attempts in ((seed0, 2), (seed1, 1)):
        s = summary_of(run.run_dir)
        assert (s["status"], s["epoch"], s["attempts"]) == ("finished", 3, attempts)
        assert [r["epoch"] for r in read_csv(run.run_dir.metrics)] == ["1", "2", "3"]
        wandb_runs = sorted((run.run_dir.path / "wandb").glob("offline-run-*"))
        assert len(wandb_runs) == attempts
        assert all(p.name.endswith(f"-{s['wandb_id']}") for p in wandb_runs)
        files = (run.run_dir.metrics, run.run_dir.checkpoint, run.run_dir.summary)
        before[run.run_id] = [p.stat().st_mtime_ns for p in files]

    finish(launch(*sweep, f"hydra.sweep.dir={tmp_path / 's2'}", cwd=tmp_path))
    for run in runs:
        files = (run.run_dir.metrics, run.run_dir.checkpoint, run.run_dir.summary)
        assert [p.stat().st_mtime_ns for p in files] == before[run.run_id]
    skipped = re.findall(r"run (\S+) already finished", job_logs(tmp_path / "s2"))
    assert set(skipped) == {r.run_id for r in runs}


def test_joblib_sweep_skips_a_run_held_by_another_process_and_relaunch_fills_the_gap(
    cifar_root, searchpath, tmp_path, capsys
):
    grid = [
        searchpath,
        f"data.root={cifar_root}",
        "data.train_subset=128",
        "trainer.device=cpu",
        f"results_dir={tmp_path / 'results'}",
    ]
    sweep = ["-m", "hydra/launcher=joblib", "experiment=tiny", *grid]
    sweep += ["data.download=false", "data.verify=false", "logger.mode=disabled"]
    seed0, seed1 = sweep_runs("tiny", grid)

    # Another process trains seed 1 (say, a second launch of the same sweep) while this sweep
    # runs: the job for seed 1 must leave its folder alone, and the sweep must still succeed.
    with seed1.run_dir.locked():
        finish(launch(*sweep, f"hydra.sweep.dir={tmp_path / 's1'}", cwd=tmp_path))
        assert (
            run_state(seed1.run_dir).status == "running"
        )  # what the status script shows meanwhile
    assert summary_of(seed0.run_dir)["status"] == "finished"
    assert not seed1.run_dir.summary.exists() and not seed1.run_dir.metrics.exists()
    assert f"skipped: run {seed1.run_id} is being trained by pid {os.getpid()}" in job_logs(
        tmp_path / "s1"
    )
    mtime = seed0.run_dir.metrics.stat().st_mtime_ns

    assert sweep_status("--experiment", "tiny", *grid) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"finished\s+2/2\s+{seed0.run_id}\s+seed=0", listing)
    assert re.search(rf"missing\s+-\s+{seed1.run_id}\s+seed=1", listing)

    finish(launch(*sweep, f"hydra.sweep.dir={tmp_path / 's2'}", cwd=tmp_path))
    assert seed0.run_dir.metrics.stat().st_mtime_ns == mtime  # finished: not trained again
    s = summary_of(seed1.run_dir)
    assert (s["status"], s["attempts"], s["epoch"]) == ("finished", 1, 2)
    assert [r["epoch"] for r in read_csv(seed1.run_dir.metrics)] == ["1", "2"]
