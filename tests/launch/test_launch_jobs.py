"""Launch identity (drsom.launch.jobs): force clears once per launch, not on every requeue."""

from __future__ import annotations

import types

import pytest
from run_helpers import only_run, run_inprocess, summary_of, tiny

from drsom.job import runner

pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")


def test_force_clears_once_per_launch_not_on_every_requeue(cifar_root, tmp_path, monkeypatch):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    assert run_inprocess(args) == "finished"
    rd = only_run(tmp_path)
    done = summary_of(rd)

    # A forced launch (SLURM job 11) is preempted after epoch 1 ...
    monkeypatch.setenv("SLURM_JOB_ID", "11")
    forced = [*args, "force=true"]
    assert run_inprocess([*forced, "trainer.stop_after_epochs=1"]) == "interrupted"
    first = summary_of(rd)
    assert first["attempts"] == 1 and first["wandb_id"] != done["wandb_id"]
    assert first["forced_by"] == runner.launch_identity() == "slurm job 11"
    # ... and its requeued job (same job id, same pickled config) resumes instead of clearing.
    assert run_inprocess(forced) == "finished"
    requeued = summary_of(rd)
    assert (requeued["attempts"], requeued["resumed_from_epoch"]) == (2, 1)
    assert requeued["wandb_id"] == first["wandb_id"] and requeued["forced_by"] == "slurm job 11"
    assert run_inprocess(forced) == "finished"  # once more in the same job: already done
    assert summary_of(rd)["attempts"] == 2

    monkeypatch.setenv("SLURM_JOB_ID", "12")  # a new launch with force=true clears again
    assert run_inprocess(forced) == "finished"
    again = summary_of(rd)
    assert (again["attempts"], again["resumed_from_epoch"]) == (1, 0)
    assert again["forced_by"] == "slurm job 12" and again["wandb_id"] != first["wandb_id"]


def test_launch_identity_follows_the_scheduler_and_hydras_output_folder(monkeypatch):
    assert runner.launch_identity() is None  # nothing requeues a plain process
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert runner.launch_identity() == "submitit-local job 4242"
    monkeypatch.setenv("SLURM_JOB_ID", "900")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "899")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert runner.launch_identity() == "slurm job 899_3"

    from hydra.core.hydra_config import HydraConfig

    fake = types.SimpleNamespace(runtime=types.SimpleNamespace(output_dir="/multirun/x/3"))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: fake))
    assert runner.launch_identity() == "slurm job 899_3, output /multirun/x/3"
