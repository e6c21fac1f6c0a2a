"""The SLURM launcher of ``hydra/launcher=slurm``: hydra-submitit-launcher's, with cluster manners.

What it adds to ``hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher``:

- **A check before anything is queued.** The request (partition, GPUs, CPUs, memory per node) is
  compared with what ``sinfo`` reports. A request the cluster cannot meet would otherwise end in a
  traceback from ``sbatch`` or, for CPUs, in a job pending forever (Reason=PartitionConfig) while
  the launcher waits without a word. A mismatch ends the launch with one line naming the key and
  what the cluster offers, and a non-zero exit; nothing is submitted.
- **The SLURM job ids, printed** when the array is submitted: one line per run.
- **A failed run fails its SLURM job.** Hydra's ``run_job`` turns an exception of the task into a
  "failed" result, and submitit's job then exits 0, so ``sacct`` said COMPLETED. Here the job
  raises instead (exit 1: FAILED); the launching process turns that back into Hydra's failed
  result with the one-line reason, so the sweep still runs every other point and reports the
  failures at the end.

The job's own name is set by ``drsom.launch.jobs`` once it knows its run id (the array carries the
launcher's ``name`` until then). Like ``drsom.launch.jobs``, this module is imported by the
launching process, which must never import torch, CUDA or wandb.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import OmegaConf

from drsom import CODE_ROOT
from drsom.launch.jobs import JobError

log = logging.getLogger(__name__)


class ClusterError(CompactHydraException):
    """The launcher's request does not fit the cluster; Hydra prints it as one line."""


class RunFailed(Exception):
    """Raised in a SLURM job whose run failed, so that the job exits non-zero (sacct: FAILED)."""


@dataclass(frozen=True)
class Node:
    partition: str
    default: bool  # the cluster's default partition
    cpus: int
    mem_mb: int
    gpus: int


def parse_sinfo(text: str) -> list[Node]:
    """``sinfo -h -N -o '%P|%c|%m|%G'``: one line per node and partition (``batch*`` is the
    default partition; ``%G`` is e.g. ``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, mem, gres = line.split("|")
        default = partition.endswith("*")
        mem_mb = int("".join(c for c in mem if c.isdigit()) or 0)  # "21694", "21694+" (mixed)
        cpus_n = int("".join(c for c in cpus if c.isdigit()) or 0)
        nodes.append(Node(partition.rstrip("*"), default, cpus_n, mem_mb, _gres_gpus(gres)))
    return nodes


def _gres_gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def requested_gpus(params: Mapping[str, Any]) -> int:
    """GPUs per node that the launcher's parameters ask for (gpus_per_node, gpus_per_task, gres)."""
    if params.get("gpus_per_node"):
        return int(params["gpus_per_node"])
    if params.get("gpus_per_task"):
        return int(params["gpus_per_task"]) * int(params.get("tasks_per_node") or 1)
    gres = params.get("gres") or ""
    return _gres_gpus(str(gres)) if gres else 0


def check_request(params: Mapping[str, Any], nodes: Sequence[Node]) -> None:
    """Raise ``ClusterError`` (one line) if no node of the requested partition can run a job."""
    partitions = sorted({n.partition for n in nodes})
    default = next((n.partition for n in nodes if n.default), None)
    offer = ", ".join(f"{p} (default)" if p == default else p for p in partitions)
    partition = params.get("partition")
    if partition is None:
        if default is None:
            raise ClusterError(
                f"error: hydra.launcher.partition=null, and the cluster has no default partition; "
                f"it has: {offer}"
            )
        partition = default
    elif partition not in partitions:
        raise ClusterError(
            f"error: hydra.launcher.partition={partition}: no such partition; the cluster has: "
            f"{offer}"
        )
    here = [n for n in nodes if n.partition == partition]
    cpus, mem_mb, gpus = (max(getattr(n, a) for n in here) for a in ("cpus", "mem_mb", "gpus"))
    largest = f"the largest node of partition {partition} has {cpus} CPUs, {mem_mb} MB, {gpus} GPUs"

    want_gpus = requested_gpus(params)
    if want_gpus > gpus:
        key = next(k for k in ("gpus_per_node", "gpus_per_task", "gres") if params.get(k))
        hint = "; for CPU-only jobs: hydra/launcher=slurm_cpu" if gpus == 0 else ""
        raise ClusterError(f"error: hydra.launcher.{key}={params[key]}: {largest}{hint}")
    tasks = int(params.get("tasks_per_node") or 1)
    if want_gpus and tasks > want_gpus:
        raise ClusterError(
            f"error: hydra.launcher.tasks_per_node={tasks} with {want_gpus} GPU(s) per node: a run "
            "on several processes takes one GPU per process (NCCL); ask for as many GPUs as "
            "tasks, or hydra/launcher=slurm_cpu for processes on CPUs (gloo)"
        )
    if params.get("cpus_per_task") and int(params["cpus_per_task"]) * tasks > cpus:
        per_node = f" (x {tasks} tasks per node)" if tasks > 1 else ""
        raise ClusterError(
            f"error: hydra.launcher.cpus_per_task={params['cpus_per_task']}{per_node}: {largest}"
        )
    # submitit passes --mem=<mem_gb>GB, which SLURM counts in units of 1024 MB.
    if params.get("mem_gb") and float(params["mem_gb"]) * 1024 > mem_mb:
        raise ClusterError(f"error: hydra.launcher.mem_gb={params['mem_gb']}: {largest}")


def cluster_nodes() -> list[Node] | None:
    """What ``sinfo`` reports, or None (with a warning) where it cannot say."""
    if shutil.which("sbatch") is None:
        raise ClusterError("error: hydra/launcher=slurm: no sbatch here (not a SLURM login node?)")
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return parse_sinfo(out) or None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning(f"cannot check the request against the cluster (sinfo: {exc}); submitting")
        return None


def failure_line(exc: BaseException) -> str:
    """The one-line reason of a failed job from submitit's error. A job that raised carries its
    traceback between two dashed lines, whose last line is ``<module>.<Class>: <message>``: the
    message. Otherwise (no result: killed, lost node) the error's first line."""
    text = str(exc)
    parts = text.split("-" * 22)
    trace = (
        [line.strip() for line in parts[1].splitlines() if line.strip()] if len(parts) > 2 else []
    )
    match = re.fullmatch(r"[\w.]+: (.+)", trace[-1]) if trace else None
    if match:
        return match.group(1)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


# Lines put before the job's own ``setup`` in the sbatch script. A signal to the batch shell
# (``scancel -b -s USR2``, ``--signal=B:USR2@<s>``) would kill bash, and with it the job, without a
# checkpoint; and bash runs a trap only once its foreground command ends. So the script's ``srun``
# line (submitit's) runs a function that starts srun in the background and waits for it, and the
# trap passes USR2 on to srun, which forwards it to the job step: the run checkpoints and submitit
# requeues the job, as for a signal to the step itself.
FORWARD_USR2 = [
    "# drsom: the batch shell passes USR2 on to the job step instead of dying of it",
    """trap 'kill -USR2 "$drsom_srun" 2>/dev/null' USR2""",
    'srun() { command srun "$@" & drsom_srun=$!; while :; do wait "$drsom_srun"; drsom_rc=$?; '
    'kill -0 "$drsom_srun" 2>/dev/null || return "$drsom_rc"; done; }',
]


def job_setup(params: Mapping[str, Any], root: Path = CODE_ROOT) -> list[str]:
    """The lines the sbatch script runs before the job: the code's folder on PYTHONPATH, the USR2
    relay, then the launcher's own ``setup``.

    The job unpickles this launcher, whose class Hydra wants in the hydra_plugins/ folder beside
    drsom/: ``root`` holds both (a checkout's root; site-packages when installed), and the job
    imports this very code from there, whatever the job's environment was installed from.
    """
    path = f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"
    return [path, *FORWARD_USR2, *(params.get("setup") or [])]


def _requeue_cut_short(exc: object) -> bool:
    return (
        isinstance(exc, subprocess.CalledProcessError)
        and list(exc.cmd[:2]) == ["scontrol", "requeue"]
        and exc.returncode == -signal.SIGTERM
    )


class SlurmLauncher(SubmititSlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and _requeue_cut_short(ret._return_value):
            # submitit's `scontrol requeue` (after our checkpoint) went through: SLURM took the job
            # back and stopped its processes, that scontrol among them, before it could exit.
            # Leave as submitit does after a requeue: no result, so the launcher keeps waiting.
            log.warning("requeued (SLURM stopped the job as it took it back)")
            sys.exit(-1)
        if ret.status == JobStatus.FAILED:
            # Hydra has logged the traceback (or JobError's one line) in the job's log already.
            exc = ret._return_value
            message = str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
            raise RunFailed(" ".join(message.split()))
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        # As the plugin's launch, with the check first, the job ids printed, and failed jobs
        # turned into Hydra's failed results instead of an exception at the first one.
        import submitit

        assert self.config is not None
        try:
            nodes = cluster_nodes()
            if nodes is not None:
                check_request(self.params, nodes)
        except ClusterError as exc:
            sys.exit(str(exc))  # the one line, exit 1 (Hydra would add a hint about tracebacks)

        params = {**self.params, "setup": job_setup(self.params)}
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params["submitit_folder"],
            slurm_max_num_timeout=params["max_num_timeout"],
        )
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params = [
            (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx)
        ]
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        array = jobs[0].job_id.split("_")[0] if jobs else "?"
        if len(jobs) == 1:
            log.info(f"submitted SLURM job {array}")
        else:
            n = len(jobs)
            log.info(f"submitted SLURM array job {array} ({n} runs; scancel {array} stops all)")
        for (overrides, _, idx, *_), job in zip(job_params, jobs, strict=True):
            log.info(f"\t#{idx} : SLURM job {job.job_id} : {' '.join(filter_overrides(overrides))}")

        results = []
        for (overrides, *_), job in zip(job_params, jobs, strict=True):
            try:
                results.append(job.results()[0])
            except Exception as exc:  # submitit's FailedJobError / UncompletedJobError
                reason = failure_line(exc)
                log.error(f"SLURM job {job.job_id} failed: {reason}")
                results.append(
                    JobReturn(
                        overrides=overrides,
                        status=JobStatus.FAILED,
                        _return_value=JobError(f"SLURM job {job.job_id}: {reason}"),
                    )
                )
        return results
