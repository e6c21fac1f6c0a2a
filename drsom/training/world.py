"""The processes one run trains on: ``World``, joined from what the launcher put in the environment.

A run launched by ``torchrun --nproc-per-node N`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) or as N tasks of a SLURM job step (``srun``, submitit's
``tasks_per_node``: ``SLURM_STEP_NUM_TASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``, the step's
first node as the rendezvous, a port from the job id), or as the tasks of submitit's local
executor (``hydra/launcher=local``, its ``SUBMITIT_LOCAL_*`` variables) trains data-parallel: one
process per device, each on its shard of every global batch (``EpochLoader(shard=...)``). Anything
else is one process, ``World()``, whose collectives do nothing, so the training loop has one code
path and a one-process run computes exactly what it computed before.

What every process must agree on goes through this object, in the same order on every process:
sums of the epoch's metrics (``sum_``), whether to pause (``any``: a preemption signal may reach one
task first), a decision only rank 0 can take (``decide``: the tuning study's pruner), the plan of
the run (``tell``/``hear``: done already, or resume from which checkpoint), and BatchNorm's running
statistics (``share_buffers``: rank 0's, as ``DistributedDataParallel``'s ``broadcast_buffers``).
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from drsom.cfg.checks import ConfigError

log = logging.getLogger("drsom")

BACKENDS = ("auto", "gloo", "nccl")
# A collective that waits longer than this is a hang (a process died without its peers noticing):
# it raises instead, and the job ends with an error rather than holding its allocation.
TIMEOUT = datetime.timedelta(minutes=10)


class LeaderStopped(Exception):
    """Raised on the other processes when rank 0 stopped before training (its reason, one line)."""


@dataclass
class World:
    """This process's place among the run's processes (default: the only one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group
    owned: bool = False  # whether this run joined the group (and leaves it)
    # the others wait for rank 0's word (past the checks every process makes itself)
    listening: bool = field(default=False, compare=False)
    told: bool = field(default=False, compare=False)  # rank 0 has told the others its plan

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run's folder, summary, checkpoints and wandb."""
        return self.rank == 0

    # ------------------------------------------------------------------ joining and leaving
    @classmethod
    def join(cls, backend: str = "auto", device: str = "auto") -> World:
        """Join the process group the launcher described in the environment, else one process.

        ``backend`` ``auto`` is NCCL when the run's device is CUDA, gloo otherwise. A process group
        already initialised (a user's script, a test) is used as it is.
        """
        if dist.is_available() and dist.is_initialized():
            return cls._of_group()
        size = launched_size()
        if size <= 1:
            return cls()
        if not dist.is_available():
            raise ConfigError(f"{size} processes launched, but this torch has no torch.distributed")
        cuda = device != "cpu" and torch.cuda.is_available()
        chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
        if chosen == "nccl" and not (cuda and dist.is_nccl_available()):
            raise ConfigError(
                "trainer.backend=nccl: no CUDA device or no NCCL in this torch; gloo serves CPUs"
            )
        _export_task_variables()
        if cuda:
            torch.cuda.set_device(_local_device(int(os.environ.get("LOCAL_RANK", 0))))
        dist.init_process_group(chosen, init_method="env://", timeout=TIMEOUT)
        world = cls._of_group()
        world.owned = True
        return world

    @classmethod
    def _of_group(cls) -> World:
        return cls(
            rank=dist.get_rank(),
            size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            backend=str(dist.get_backend()),
        )

    def leave(self) -> None:
        """Destroy the process group this run joined (a sweep's next run joins again)."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: CUDA device ``LOCAL_RANK`` when the run is on CUDA."""
        if self.size > 1 and device.type == "cuda":
            return torch.device("cuda", _local_device(self.local_rank))
        return device

    # ------------------------------------------------------------------------ collectives
    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes, in place (and returned)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any process."""
        if self.size == 1:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def decide(self, choose: Callable[[], Any]) -> Any:
        """``choose()`` called on rank 0 only; its answer (picklable) on every process."""
        if self.size == 1:
            return choose()
        return self._broadcast(choose() if self.main else None)

    def tell(self, message: Any) -> None:
        """Rank 0: send every other process ``message`` (they ``hear`` it)."""
        if self.size > 1:
            self._broadcast(message)
        self.told = True

    def hear(self) -> Any:
        """Ranks above 0: what rank 0 ``tell``s."""
        return self._broadcast(None)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Every process takes rank 0's buffers (BatchNorm's running statistics)."""
        if self.size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def _broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_size() -> int:
    """How many processes the launcher started for this run (1 when it said nothing).

    SLURM: the tasks of this job step (``srun``; submitit runs its tasks so), not
    ``SLURM_NTASKS``, which a batch script or an ``salloc`` shell also carries while running one
    process.
    """
    for name in ("WORLD_SIZE", *(names[0] for names in TASK_VARIABLES.values())):
        value = os.environ.get(name)
        if value:
            return int(value)
    return 1


# Per task launcher: (number of tasks, global rank, local rank, job id) variables
TASK_VARIABLES = {
    "slurm": ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID"),
    "submitit-local": (
        "SUBMITIT_LOCAL_NTASKS",
        "SUBMITIT_LOCAL_GLOBALID",
        "SUBMITIT_LOCAL_LOCALID",
        "SUBMITIT_LOCAL_JOB_ID",
    ),
}


def _local_device(local_rank: int) -> int:
    # a task bound to its own GPU (gpus_per_task) sees only that one
    return local_rank % max(torch.cuda.device_count(), 1)


def _export_task_variables() -> None:
    """torchrun's variables from a task launcher's own: rank, local rank, the rendezvous (the
    SLURM step's first node; this machine for submitit's local tasks), a port derived from the
    job id (what submitit's ``TorchDistributedEnvironment`` does, without needing a submitit
    job). Values already set win."""
    if "WORLD_SIZE" in os.environ:
        return
    kind = next(k for k, names in TASK_VARIABLES.items() if os.environ.get(names[0]))
    size, rank, local, job_id = TASK_VARIABLES[kind]
    job = int("".join(filter(str.isdigit, os.environ.get(job_id, "0"))) or 0)
    host = "127.0.0.1"
    if kind == "slurm":
        host = _first_host(os.environ.get("SLURM_STEP_NODELIST", ""))
    values = {
        "WORLD_SIZE": os.environ[size],
        "RANK": os.environ[rank],
        "LOCAL_RANK": os.environ.get(local, "0"),
        "MASTER_ADDR": host,
        "MASTER_PORT": str(20000 + job % 40000),
    }
    for key, value in values.items():
        os.environ.setdefault(key, value)


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[03-05]``), as ``scontrol`` expands it."""
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        return out[0] if out else nodelist
    except (OSError, subprocess.SubprocessError):
        return nodelist.split(",")[0]
