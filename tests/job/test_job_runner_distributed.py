"""A run on several processes (gloo, CPU): one run folder, processes that never diverge, resume.

The optimizer's own data-parallel tests (tests/optim/test_optim_distributed.py) check DRSOM's
step; these check the runner around it: the sharded loaders, rank 0 as the only writer, the
agreed pause, the resume, and DDP for the first-order optimizers (issue 31, items 1 and 3 e-f).
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from distributed_runs import launch
from distributed_workers import state_tensors
from run_helpers import only_run, read_csv, tiny

from drsom.cfg.checks import ConfigError
from drsom.job.validate import settle_processes
from drsom.store.identity import run_id
from drsom.training.build import check_data_parallel, load_data
from drsom.training.world import World

pytestmark = pytest.mark.usefixtures("no_scheduler_job")

# 128 training images in batches of 32: 4 steps an epoch, 2 epochs; the signal lands mid-epoch 2
EPOCHS = ("trainer.epochs=2", "trainer.lr_schedule=step", "trainer.lr_milestones=[1]")
OPTIMIZERS = {
    "drsom": ["optimizer=drsom_adaptive"],
    "adam": ["optimizer=adam", "optimizer.lr=1e-3"],
    "sgd": ["optimizer=sgd", "optimizer.lr=0.05"],
}


def _bitwise_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _timeless(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock columns, NaN written as text (NaN != NaN)."""
    return [
        {k: "nan" if v != v else v for k, v in row.items() if not k.endswith("_seconds")}
        for row in rows
    ]


def _rows(folder) -> list[dict]:
    """metrics.csv without its wall-clock columns."""
    return _timeless(read_csv(folder / "metrics.csv"))


@pytest.mark.parametrize("optimizer", ["drsom", "sgd"])  # Adam: in the resume test below
def test_two_processes_train_one_run_and_end_identical(tmp_path, cifar_root, optimizer):
    results = tmp_path / "results"
    overrides = tiny(cifar_root, results, *OPTIMIZERS[optimizer], *EPOCHS)
    ranks = launch(overrides, 2, tmp_path / "ranks")
    assert [r["status"] for r in ranks] == ["finished", "finished"]
    # (a) through the runner: parameters, buffers (rank 0's BatchNorm statistics, shared before
    # each evaluation) and every optimizer state tensor and scalar, bitwise equal across ranks
    for key in ("params", "buffers"):
        assert _bitwise_equal(ranks[0][key], ranks[1][key]), key
    assert _bitwise_equal(
        state_tensors(ranks[0]["optimizer"]), state_tensors(ranks[1]["optimizer"])
    )
    # the reduced sums: the same rows (but for each process's own clock)
    assert _timeless(ranks[0]["metrics"]) == _timeless(ranks[1]["metrics"])
    run = only_run(results)  # one folder, written by rank 0
    summary = json.loads(run.summary.read_text())
    config = run.read_config()
    assert (summary["processes"], summary["backend"]) == (2, "gloo")
    assert config["trainer"]["processes"] == 2
    # another run than the one-process run of the same command (its id hashes processes: 2)
    assert run.name != run_id({**config, "trainer": {**config["trainer"], "processes": 1}})
    rows = _rows(run.path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # the epoch's running train accuracy counts all 128 images once (both shards)
    assert all(float(r["train_acc"]) * 128 == pytest.approx(round(float(r["train_acc"]) * 128))
               for r in rows)  # fmt: skip
    assert math.isfinite(float(rows[-1]["test_acc"]))
    # the same command again: every process skips the finished run
    again = launch(overrides, 2, tmp_path / "again")
    assert [r["status"] for r in again] == ["finished", "finished"]
    assert [("params" in r) for r in again] == [False, False]  # nothing trained


@pytest.mark.parametrize("optimizer", ["drsom", "adam"])
def test_a_run_stopped_mid_epoch_by_one_process_resumes_to_the_uninterrupted_run(
    tmp_path, cifar_root, optimizer
):
    whole = tmp_path / "whole"
    launch(tiny(cifar_root, whole, *OPTIMIZERS[optimizer], *EPOCHS), 2, tmp_path / "a")
    parts = tmp_path / "parts"
    overrides = tiny(cifar_root, parts, *OPTIMIZERS[optimizer], *EPOCHS)
    # (e) the preemption signal reaches rank 1 alone, after step 6 (mid epoch 2 of 4 steps)
    first = launch(overrides, 2, tmp_path / "b", signal_at=(1, 6))
    assert [r["status"] for r in first] == ["interrupted", "interrupted"]
    # every process hands the signal over (rank 0's submitit handler requeues the job)
    assert [r["handed_over"] for r in first] == [True, True]
    run = only_run(parts)
    summary = json.loads(run.summary.read_text())
    assert summary["status"] == "interrupted" and summary["stopped_by"] == "SIGUSR2"
    second = launch(overrides, 2, tmp_path / "c")  # the same command again
    assert [r["status"] for r in second] == ["finished", "finished"]
    assert _rows(run.path) == _rows(only_run(whole).path)
    a = torch.load(only_run(whole).checkpoint, weights_only=False)["trainer"]
    b = torch.load(run.checkpoint, weights_only=False)["trainer"]
    assert _bitwise_equal(state_tensors(a["model"]), state_tensors(b["model"]))
    assert _bitwise_equal(state_tensors(a["optimizer"]), state_tensors(b["optimizer"]))


def test_rank0s_refusal_reaches_the_other_process_in_one_line(tmp_path, cifar_root):
    overrides = tiny(cifar_root, tmp_path / "results", "optimizer=adahessian", "trainer.epochs=1")
    ranks = launch(overrides, 2, tmp_path / "ranks")
    assert "a run on 2 processes takes DRSOM or a first-order optimizer" in ranks[0]["status"]
    assert ranks[1]["status"].startswith("error: rank 0 stopped before training: ConfigError")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# ------------------------------------------------------------------- one-line refusals
def _trainer(**values) -> dict:
    base = {"batch_size": 32, "processes": None, "sync_batchnorm": False}
    return {**base, **values}


def test_the_number_of_processes_is_filled_in_or_a_mismatch_refused():
    t = _trainer()
    settle_processes(t, 2, torch.device("cpu"))
    assert t["processes"] == 2
    with pytest.raises(ConfigError, match=r"trainer.processes=2, but this run was launched on 1 "):
        settle_processes(_trainer(processes=2), 1, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"trainer.batch_size=32 does not split over 3 processes"):
        settle_processes(_trainer(), 3, torch.device("cpu"))
    with pytest.raises(ConfigError, match="SyncBatchNorm runs on CUDA devices only"):
        settle_processes(_trainer(sync_batchnorm=True), 2, torch.device("cpu"))
    settle_processes(_trainer(sync_batchnorm=True), 1, torch.device("cpu"))  # inert alone


def test_an_optimizer_that_cannot_be_kept_in_step_is_refused():
    from pytorch_optimizer import AdaHessian

    from drsom.optim import DRSOM

    class LineSearch(torch.optim.SGD):
        step_protocol = "closure"  # decides from its own closure calls

    p = [torch.zeros(3, requires_grad=True)]
    two = World(rank=0, size=2)
    check_data_parallel(torch.optim.Adam(p), two)
    check_data_parallel(DRSOM(p), two)  # it takes reduce=
    with pytest.raises(ConfigError, match="create_graph"):
        check_data_parallel(AdaHessian(p), two)
    with pytest.raises(ConfigError, match="closure calls"):
        check_data_parallel(LineSearch(p, lr=0.1), two)
    check_data_parallel(AdaHessian(p), World())


def test_a_last_batch_smaller_than_the_number_of_processes_is_refused(cifar_root, tmp_path):
    from hydra import compose, initialize_config_dir
    from run_helpers import REPO

    from drsom.store.identity import complete

    # 129 images in batches of 32 leave one image for the last batch
    overrides = tiny(cifar_root, tmp_path, "data.train_subset=129")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    from omegaconf import OmegaConf

    c = complete(OmegaConf.to_container(cfg, resolve=True))
    load_data(c, torch.device("cpu"), tmp_path, World(rank=0, size=1))
    with pytest.raises(ConfigError, match="last batch of an epoch has 1 images"):
        load_data(c, torch.device("cpu"), tmp_path, World(rank=1, size=2))


def test_a_backend_this_machine_lacks_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="trainer.backend=nccl: no CUDA device"):
        World.join("nccl", "cpu")


def test_one_process_keeps_the_stored_run_ids_and_two_are_another_run():
    from run_helpers import compose_config

    from drsom.job.validate import validate
    from drsom.store.identity import complete

    plain = compose_config("model=cnn", "data=digits")
    assert plain["trainer"]["processes"] is None  # filled in by the launch
    keys = ("processes", "backend", "sync_batchnorm")
    stored = {**plain, "trainer": {k: v for k, v in plain["trainer"].items() if k not in keys}}
    validate(complete(stored))  # a config stored before the options still runs
    one = {**plain, "trainer": {**plain["trainer"], "processes": 1}}
    two = {**plain, "trainer": {**plain["trainer"], "processes": 2}}
    nccl = {**one, "trainer": {**one["trainer"], "backend": "nccl", "sync_batchnorm": True}}
    assert run_id(stored) == run_id(plain) == run_id(one) == run_id(nccl)
    assert run_id(two) != run_id(one)


def test_torchrun_trains_the_design_cards_command_as_one_run(tmp_path):
    import os
    import subprocess
    import sys

    from run_helpers import REPO

    results = tmp_path / "results"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("run.py", "data=digits", "model=cnn", "trainer.epochs=2", "trainer.progress=false"),
        *(f"results_dir={results}", "logger.mode=disabled", f"hydra.run.dir={tmp_path}/hydra"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run = only_run(results)
    summary = json.loads(run.summary.read_text())
    assert (summary["status"], summary["processes"], summary["backend"]) == ("finished", 2, "gloo")
    assert "(global batches: 2 processes, gloo)" in done.stderr + done.stdout
    # a sweep under torchrun would run once per process: refused before anything starts
    refused = subprocess.run(
        [*command[:6], "run.py", "-m", "seed=0,1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode != 0
    assert "error: run.py -m under torchrun" in refused.stderr


def test_a_refusal_every_process_makes_itself_ends_every_process_in_one_line(tmp_path, cifar_root):
    # trainer.processes=4 on a launch of 2: each process refuses alone, nobody waits for rank 0
    overrides = tiny(cifar_root, tmp_path / "results", "trainer.processes=4")
    ranks = launch(overrides, 2, tmp_path / "ranks", timeout=120)
    assert all("trainer.processes=4, but this run was launched on 2" in r["status"] for r in ranks)


def test_slurm_step_variables_become_torchruns(monkeypatch):
    from drsom.training import world

    monkeypatch.setattr(os, "environ", dict(os.environ))  # whatever is exported goes with it
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # a batch script's: one process, not a step
    assert world.launched_size() == 1
    values = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}
    values |= {"SLURM_JOB_ID": "123", "SLURM_STEP_NODELIST": ""}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert world.launched_size() == 2
    world._export_task_variables()
    got = {k: os.environ[k] for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    assert got == {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "20123"}


def test_a_sweep_on_submitits_local_tasks_trains_each_run_on_its_processes(tmp_path):
    import subprocess
    import sys

    from run_helpers import REPO

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        command = [
            *(sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=local"),
            *("hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=0"),
            *("data=digits", "model=cnn", "trainer.epochs=1", "trainer.progress=false"),
            *(f"results_dir={tmp_path / 'results'}", "logger.mode=disabled"),
            f"hydra.sweep.dir={tmp_path / f'sweep{len(extra)}'}",
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    # the launching process names the runs: it must know how many processes each has
    refused = sweep()
    assert refused.returncode != 0
    assert "set trainer.processes=2 in the sweep" in refused.stdout + refused.stderr
    assert not (tmp_path / "results").exists()
    done = sweep("trainer.processes=2")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(only_run(tmp_path / "results").summary.read_text())
    assert (summary["status"], summary["processes"], summary["backend"]) == ("finished", 2, "gloo")
