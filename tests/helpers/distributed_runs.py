"""Processes of the data-parallel runner tests (tests/job/test_job_runner_distributed.py).

``launch(overrides, world, tmp)`` runs ``runner.run`` of a composed config on ``world`` gloo
processes (``file://`` rendezvous in ``tmp``, no port), the way torchrun's processes would, and
fails the calling test if they have not all finished within the timeout. Each process saves what
it ended with to ``tmp/rank<r>.pt``: the status, its model's parameters and buffers, and its
optimizer's state, so that tests can compare the processes (only rank 0 writes the run folder).

``signal_at``: (rank, step) — that process sends itself the preemption signal (SIGUSR2) after
that many steps, as a SLURM preemption reaching one task first would.
"""

from __future__ import annotations

import datetime
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from distributed_workers import join_or_fail
from run_helpers import REPO

from drsom.job import runner
from drsom.training.loop import Trainer


def _rank(rank: int, overrides: list[str], world: int, tmp: str, signal_at) -> None:
    from hydra import compose, initialize_config_dir

    torch.set_num_threads(1)  # one core per process
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=90),
    )
    handed = []
    # what submitit's handler would be: the guard hands the signal over to it once saved
    signal.signal(signal.SIGUSR2, lambda *_: handed.append(True))
    seen: dict = {}
    original_epochs, original_step = runner._epochs, Trainer._optimizer_step

    def spy(job, trainer, *args, **kwargs):
        seen["trainer"] = trainer
        return original_epochs(job, trainer, *args, **kwargs)

    def step(self, closure):
        original_step(self, closure)
        if signal_at is not None and (rank, self.step + 1) == tuple(signal_at):
            os.kill(os.getpid(), signal.SIGUSR2)

    runner._epochs, Trainer._optimizer_step = spy, step
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        try:
            status = runner.run(cfg)
        except runner.USER_ERRORS as exc:
            status = f"error: {exc}"
        out = {"status": status, "handed_over": bool(handed)}
        trainer = seen.get("trainer")
        if trainer is not None:
            out["params"] = [p.detach().clone() for p in trainer.model.parameters()]
            out["buffers"] = [b.clone() for b in trainer.model.buffers()]
            out["optimizer"] = trainer.optimizer.state_dict()
            out["metrics"] = trainer.metrics
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
    finally:
        runner._epochs, Trainer._optimizer_step = original_epochs, original_step
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(
    overrides: list[str], world: int, tmp: Path, signal_at=None, timeout: float = 240.0
) -> list[dict]:
    """``runner.run`` on ``world`` processes; what each ended with, by rank."""
    tmp.mkdir(parents=True, exist_ok=True)
    for old in tmp.glob("rank*.pt"):
        old.unlink()
    (tmp / "rendezvous").unlink(missing_ok=True)
    ctx = mp.spawn(_rank, args=(overrides, world, str(tmp), signal_at), nprocs=world, join=False)
    join_or_fail(ctx, timeout, f"{world} training processes")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]
