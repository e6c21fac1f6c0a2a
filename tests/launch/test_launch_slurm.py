"""Sweeps on a real SLURM scheduler (``make test-slurm``), and the launcher's cluster checks.

The ``slurm`` tests need a controller that answers ``sinfo``; ``make test-slurm`` starts a
single-node one (scripts/slurm/up.sh: partitions ``batch`` and ``urgent``, whose jobs preempt
batch jobs) and stops it afterwards. Elsewhere they skip, saying why. Every launch goes through the
suite's own ``hydra/launcher=slurm`` preset with a CPU-only override, on scikit-learn's digits
(a few seconds per run). The other tests (no marker) check the pieces without a cluster.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import read_csv, run_inprocess, summary_of, wait_for, without_wall_clock

from drsom.job.preemption import PreemptionGuard
from drsom.launch.slurm import (
    FORWARD_USR2,
    ClusterError,
    check_request,
    failure_line,
    job_setup,
    parse_sinfo,
)
from drsom.store.folder import RunDir
from drsom.store.sweeps import sweep_runs

REPO = Path(__file__).resolve().parents[2]
CPU_ONLY = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]
# 256 digits, batch 32: 8 steps an epoch, a few seconds on one core.
DIGITS = [
    "data=digits",
    "data.train_subset=256",
    "model=cnn",
    "trainer.batch_size=32",
    "trainer.device=cpu",
    "trainer.progress=false",
    "logger.mode=disabled",
]
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------- without a cluster
SINFO = "batch*|2|21694|(null)\nurgent|2|21694|(null)\ngpu|64|515000|gpu:a100:4(S:0-1)\n"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"gpus_per_node": 1},
            "error: hydra.launcher.gpus_per_node=1: the largest node of partition batch has 2 "
            "CPUs, 21694 MB, 0 GPUs; for CPU-only jobs: hydra/launcher=slurm_cpu",
        ),
        (
            {"gpus_per_node": 0, "cpus_per_task": 4},
            "error: hydra.launcher.cpus_per_task=4: the largest node of partition batch has 2 "
            "CPUs, 21694 MB, 0 GPUs",
        ),
        (
            {"partition": "urgent", "mem_gb": 32},
            "error: hydra.launcher.mem_gb=32: the largest node of partition urgent has 2 CPUs, "
            "21694 MB, 0 GPUs",
        ),
        (
            {"partition": "gpus", "gpus_per_node": 1},
            "error: hydra.launcher.partition=gpus: no such partition; the cluster has: batch "
            "(default), gpu, urgent",
        ),
        (
            {"partition": "gpu", "gpus_per_node": 1, "tasks_per_node": 4},
            "error: hydra.launcher.tasks_per_node=4 with 1 GPU(s) per node: a run on several "
            "processes takes one GPU per process (NCCL); ask for as many GPUs as tasks, or "
            "hydra/launcher=slurm_cpu for processes on CPUs (gloo)",
        ),
        (
            {"partition": "gpu", "gres": "gpu:8"},
            "error: hydra.launcher.gres=gpu:8: the largest node of partition gpu has 64 CPUs, "
            "515000 MB, 4 GPUs",
        ),
    ],
)
def test_a_request_no_node_can_meet_is_one_line_naming_the_key(params, message):
    with pytest.raises(ClusterError) as caught:
        check_request(params, parse_sinfo(SINFO))
    assert str(caught.value) == message


def test_requests_that_fit_pass_the_check():
    nodes = parse_sinfo(SINFO)
    check_request({"gpus_per_node": 0, "cpus_per_task": 2, "mem_gb": 21}, nodes)
    check_request({"partition": "gpu", "gpus_per_node": 4, "cpus_per_task": 16}, nodes)
    check_request({"partition": "gpu", "gpus_per_task": 2, "tasks_per_node": 2}, nodes)


def test_failure_line_is_the_jobs_own_reason():
    trace = (
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File ...\n"
        "drsom.launch.slurm.RunFailed: error: optimizer.weight_decay must be a finite number >= 0,"
        " got -1\n"
        "----------------------\nYou can check full logs with 'job.stderr(0)' ...\n  - /x.err\n"
    )
    assert (
        failure_line(RuntimeError(trace))
        == "error: optimizer.weight_decay must be a finite number >= 0, got -1"
    )
    lost = "Job 12_0 has not produced any output (state: NODE_FAIL)\nError stream: ..."
    assert failure_line(RuntimeError(lost)) == lost.splitlines()[0]


def test_the_job_script_puts_the_folder_holding_drsom_and_hydra_plugins_on_pythonpath(tmp_path):
    # The checkout's root: it holds drsom/ and hydra_plugins/ (never drsom/ itself, where
    # hydra_plugins is not). The line as the sbatch script gets it, before the user's setup.
    setup = job_setup({"setup": ["module load cuda"]})
    line = f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"
    assert setup == [line, *FORWARD_USR2, "module load cuda"]
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="python -m x", folder=tmp_path, setup=setup)
    assert f"\n# setup\n{line}\n" in script

    # Run by a job's shell, the line alone makes the launcher class and the package importable
    # (python -S: no site-packages, so no install of the suite helps) and keeps what was there.
    probe = (
        "import importlib.util as u, json, os; print(json.dumps([os.environ['PYTHONPATH'], "
        "u.find_spec('hydra_plugins.drsom_slurm_launcher').origin, u.find_spec('drsom').origin]))"
    )
    for before, after in (({}, str(REPO)), ({"PYTHONPATH": "/opt/x"}, f"{REPO}:/opt/x")):
        env = {"PATH": os.environ["PATH"], **before}
        shell = f"{line}\nexec {shlex.quote(sys.executable)} -S -c {shlex.quote(probe)}"
        done = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [
            after,
            str(REPO / "hydra_plugins" / "drsom_slurm_launcher" / "__init__.py"),
            str(REPO / "drsom" / "__init__.py"),
        ]


def test_a_repeat_of_the_signal_within_moments_is_the_same_preemption():
    # `scancel --full -s USR2` reaches the run twice (srun forwards it, and so does the batch
    # shell): that must not count as "again before a safe point".
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        with PreemptionGuard(grace_s=60) as guard:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)
            assert guard.requested and received == []
            guard.hand_over()
        assert received == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_status_script_takes_the_launch_line_as_it_is(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("status", REPO / "scripts" / "sweep_status.py")
    status = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(status)
    line = ["-m", *CPU_ONLY, "hydra.launcher.timeout_min=30", "+hydra.launcher.comment=x"]
    line += [*DIGITS, "optimizer=sgd,adam", "seed=0", f"results_dir={tmp_path}"]
    assert status.main(line) == 0
    out = capsys.readouterr().out
    assert "0 finished" in out and "2 missing" in out
    ids = [r.run_id for r in sweep_runs(None, [a for a in line if a != "-m"])]
    assert all(i in out for i in ids)


# ------------------------------------------------------------------- on a cluster
def _sinfo() -> str | None:
    """Why no SLURM tests can run here, or None."""
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if out.returncode:
        return f"sinfo: {' '.join(out.stderr.split())}"
    if {"batch", "urgent"} - set(out.stdout.split()):
        return f"partitions {out.stdout.split()}, not the test cluster's batch and urgent"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _sinfo()
    if reason:
        pytest.skip(f"no SLURM test cluster ({reason}); `make test-slurm` starts one")


def env() -> dict[str, str]:
    environment = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    environment.pop("HYDRA_FULL_ERROR", None)  # the launcher's errors as users see them
    # The tests' plugins (tests/helpers/trial_plugins.py). Not the repository: that the jobs
    # import this checkout's drsom, whichever one the venv was installed from, is the launcher's
    # own export (drsom.launch.slurm.job_setup), which these tests are there to try.
    paths = [str(REPO / "tests" / "helpers"), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return environment


def launch(*args: str, cwd: Path) -> subprocess.Popen:
    n = len(list(cwd.glob("launch-*.out")))
    logs = (cwd / f"launch-{n}.out", cwd / f"launch-{n}.err")
    with open(logs[0], "w") as out, open(logs[1], "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), "-m", *args],
            cwd=cwd,
            env=env(),
            stdout=out,
            stderr=err,
        )
    proc.logs = logs
    return proc


def finish(proc: subprocess.Popen, rc: int | None = 0, timeout: float = 420) -> tuple[str, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out, err = (p.read_text() for p in proc.logs)
    if rc is not None:
        assert proc.returncode == rc, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def submitted(out: str) -> dict[int, str]:
    """The launcher's "#<n> : SLURM job <id> : <overrides>" lines: {n: job id}."""
    return {int(n): job for n, job in re.findall(r"#(\d+) : SLURM job (\d+(?:_\d+)?) :", out)}


def sacct(job: str) -> tuple[str, str, str]:
    """(name, state, exit code) of a job's allocation, as accounting has them."""
    for _ in range(50):  # the controller sends job records to slurmdbd within moments
        line = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobName,State,ExitCode"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if line and "PENDING" not in line and "RUNNING" not in line:
            return tuple(line.splitlines()[-1].split("|"))
        time.sleep(0.2)
    raise AssertionError(f"sacct has no end state for {job}: {line!r}")


def job_logs(sweep: Path) -> str:
    return "\n".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))


def epochs_done(rd: RunDir) -> int:
    try:
        return len(read_csv(rd.metrics))
    except FileNotFoundError:
        return 0


def assert_same_run(resumed: RunDir, whole: RunDir) -> None:
    assert without_wall_clock(read_csv(resumed.metrics)) == without_wall_clock(
        read_csv(whole.metrics)
    )
    a = whole.load_checkpoint()["trainer"]["model"]
    b = resumed.load_checkpoint()["trainer"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slurm
def test_sweep_finishes_every_run_and_a_relaunch_trains_nothing(cluster, tmp_path, capsys):
    grid = [*DIGITS, "trainer.epochs=2", "optimizer=sgd,adam", "seed=0,1"]
    grid += [f"results_dir={tmp_path / 'results'}"]
    line = [*CPU_ONLY, *grid]
    out, err = finish(launch(*line, f"hydra.sweep.dir={tmp_path / 's1'}", cwd=tmp_path))
    runs = sweep_runs(None, grid)
    jobs = submitted(out + err)
    assert sorted(jobs) == [0, 1, 2, 3], out + err
    assert re.search(r"submitted SLURM array job \d+ \(4 runs", out + err)
    for n, run in enumerate(runs):
        assert summary_of(run.run_dir)["status"] == "finished"
        assert sacct(jobs[n]) == (run.run_id, "COMPLETED", "0:0")  # named after its run

    # The status script, given the launch line as it is (`-m`, the launcher's overrides).
    status = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sweep_status.py"), "-m", *line],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert status.returncode == 0, status.stderr
    assert "4 finished, 0 running" in status.stdout

    before = {r.run_id: r.run_dir.metrics.stat().st_mtime_ns for r in runs}
    finish(launch(*line, f"hydra.sweep.dir={tmp_path / 's2'}", cwd=tmp_path))
    assert {r.run_id: r.run_dir.metrics.stat().st_mtime_ns for r in runs} == before
    skipped = re.findall(r"run (\S+) already finished", job_logs(tmp_path / "s2"))
    assert sorted(skipped) == sorted(before)


@pytest.mark.slurm
def test_a_bad_grid_point_fails_only_its_job(cluster, tmp_path):
    grid = [*DIGITS, "optimizer=sgd", "trainer.epochs=1", "optimizer.weight_decay=0,-1"]
    grid += [f"results_dir={tmp_path / 'results'}"]
    # The CPU preset this time, with a CPU share that fits the test node.
    proc = launch(
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        *grid,
        f"hydra.sweep.dir={tmp_path / 's'}",
        cwd=tmp_path,
    )
    out, err = finish(proc, rc=1)
    good, bad = sweep_runs(None, grid)
    assert summary_of(good.run_dir)["status"] == "finished"
    jobs = submitted(out + err)
    assert sacct(jobs[0])[1:] == ("COMPLETED", "0:0")
    assert sacct(jobs[1])[1:] == ("FAILED", "1:0")
    assert "Error executing job with overrides:" in err and "optimizer.weight_decay=-1" in err
    assert re.search(rf"SLURM job {jobs[1]}: error: optimizer\.weight_decay.*-1", err)
    assert "Traceback" not in err


@pytest.mark.slurm
def test_a_tuning_study_survives_a_failed_array_job_and_a_relaunch_trains_nothing(
    cluster, tmp_path
):
    import optuna

    from drsom.store.study import open_storage

    # tests/helpers/trial_plugins.py: the first trial to build fails
    marker = tmp_path / "fail-once"
    marker.touch()
    line = [
        *CPU_ONLY,
        *DIGITS,
        "experiment=tune_digits_cnn",
        "optimizer=sgd",
        "data.train_subset=64",
        "trainer.epochs=1",
        "trainer.lr_milestones=[]",
        "model._target_=trial_plugins.marked_cnn",
        f"+model.marker={marker}",
        "+model.mode=fail",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        f"results_dir={tmp_path / 'results'}",
    ]
    out, err = finish(launch(*line, f"hydra.sweep.dir={tmp_path / 's1'}", cwd=tmp_path))
    jobs = submitted(out + err)  # a fresh study: job #n runs trial n
    journal = tmp_path / "studies" / "tune_digits_cnn-sgd.journal"
    study = optuna.load_study(study_name="tune_digits_cnn-sgd", storage=open_storage(str(journal)))
    states = [t.state.name for t in study.trials]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states
    assert states[:2].count("FAIL") == 1  # one of the first array's two jobs
    assert len(re.findall(r"submitted SLURM array job \d+ \(2 runs", out + err)) == 2
    for t in study.trials:
        name, state, code = sacct(jobs[t.number])
        if t.state.name == "FAIL":
            assert (state, code) == ("FAILED", "1:0")
            assert "this trial fails on purpose" in t.user_attrs["error"]
        else:
            assert (name, state, code) == (t.user_attrs["run_id"], "COMPLETED", "0:0")
            assert summary_of(RunDir(tmp_path / "results" / name))["status"] == "finished"

    before = journal.read_bytes()
    out, err = finish(launch(*line, f"hydra.sweep.dir={tmp_path / 's2'}", cwd=tmp_path))
    assert "submitted SLURM" not in out + err and "3 complete, 0 pruned, 1 failed" in out + err
    assert journal.read_bytes() == before


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hydra.launcher.gpus_per_node=1", "gpus_per_node=1"),
        ("hydra.launcher.cpus_per_task=512", "cpus_per_task=512"),
        ("hydra.launcher.mem_gb=100000", "mem_gb=100000"),
        ("hydra.launcher.partition=nowhere", "partition=nowhere"),
    ],
)
def test_a_request_the_cluster_cannot_meet_queues_nothing(cluster, tmp_path, override, key):
    def queued() -> set[str]:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
        return set(out.split())

    before = queued()
    proc = launch(*CPU_ONLY, override, *DIGITS, f"results_dir={tmp_path}", cwd=tmp_path)
    _, err = finish(proc, rc=1, timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: hydra.launcher.{key}: "), err
    assert "batch" in lines[0]  # what the cluster offers
    # Hydra made its sweep folder; SLURM got nothing. An earlier test's jobs may still be
    # leaving the queue meanwhile, so the check is "no new id", not "the same queue".
    assert queued() <= before


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("whole")
    assert run_inprocess([*LONGER, f"results_dir={results}"]) == "finished"
    (folder,) = [p for p in results.iterdir() if p.is_dir()]
    return RunDir(folder)


# 4 epochs of 8 steps: long enough to be signalled in the middle.
LONGER = [*DIGITS, "optimizer=drsom", "trainer.epochs=4", "seed=3"]


def preempt_and_resume(
    tmp_path: Path, uninterrupted: RunDir, preempt, *launcher: str, run: list[str] = LONGER
) -> str:
    """Launch ``run`` as a one-run sweep, call ``preempt(job id)`` after its first epoch; the
    run must requeue, resume and end as the uninterrupted run. Returns the jobs' logs."""
    grid = [*run, f"results_dir={tmp_path / 'results'}"]
    (run,) = sweep_runs(None, grid)
    proc = launch(*CPU_ONLY, *launcher, *grid, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    try:
        wait_for(
            lambda: submitted(b"".join(p.read_bytes() for p in proc.logs).decode()),
            "submit",
            timeout=240,
            poll=0.1,
        )
        (job,) = submitted("".join(p.read_text() for p in proc.logs)).values()
        wait_for(lambda: epochs_done(run.run_dir) >= 1, "epoch 1", timeout=240, poll=0.1)
        preempt(job)
    except BaseException:
        proc.kill()
        raise
    finish(proc)
    logs = job_logs(tmp_path / "s")
    assert "received SIGUSR2" in logs and "Requeued job" in logs, logs
    s = summary_of(run.run_dir)
    assert (s["status"], s["attempts"]) == ("finished", 2), s
    assert_same_run(run.run_dir, uninterrupted)
    assert sacct(job)[1] == "COMPLETED"
    return logs


@pytest.mark.slurm
@pytest.mark.parametrize(
    "how",
    [
        ["--signal=USR2"],  # to the job step: what SLURM's own --signal=USR2@<s> does
        ["--batch", "--signal=USR2"],  # to the batch shell only, as --signal=B:USR2@<s> does
        ["--full", "--signal=USR2"],  # to both: the run gets it twice, and saves once
    ],
    ids=["step", "batch-shell", "full"],
)
def test_scancel_usr2_checkpoints_requeues_and_resumes_exactly(
    cluster, tmp_path, uninterrupted, how
):
    def preempt(job: str) -> None:
        subprocess.run(["scancel", *how, job], check=True)

    logs = preempt_and_resume(tmp_path, uninterrupted, preempt)
    assert "again before a safe point" not in logs


@pytest.mark.slurm
def test_preemption_by_a_higher_priority_partition_resumes_exactly(
    cluster, tmp_path, uninterrupted
):
    urgent = []

    def preempt(job: str) -> None:
        # The run holds every CPU of the node: the urgent job can only run by preempting it.
        out = subprocess.run(
            ["sbatch", "--parsable", "-p", "urgent", "-c", "2", "--mem=1G"]
            + [f"--output={tmp_path}/urgent-%j.out", "--wrap", "sleep 2"],
            capture_output=True,
            text=True,
            check=True,
        )
        urgent.append(out.stdout.strip().split(";")[0])

    preempt_and_resume(
        tmp_path,
        uninterrupted,
        preempt,
        "hydra.launcher.partition=batch",
        "hydra.launcher.cpus_per_task=2",
    )
    assert sacct(urgent[0])[1:] == ("COMPLETED", "0:0")


@pytest.mark.slurm
def test_a_two_task_job_trains_one_run_and_its_requeue_resumes_exactly(cluster, tmp_path):
    from distributed_runs import launch as on_processes

    # the reference: the same run on 2 gloo processes here, uninterrupted
    run = [*LONGER, "trainer.processes=2"]
    whole = tmp_path / "whole"
    ranks = on_processes([*run, f"results_dir={whole}", "logger.mode=disabled"], 2, tmp_path / "r")
    assert [r["status"] for r in ranks] == ["finished", "finished"]
    (folder,) = [p for p in whole.iterdir() if p.is_dir()]

    def preempt(job: str) -> None:
        subprocess.run(["scancel", "--signal=USR2", job], check=True)

    two_tasks = ["hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1"]
    logs = preempt_and_resume(tmp_path, RunDir(folder), preempt, *two_tasks, run=run)
    assert "(global batches: 2 processes, gloo)" in logs
