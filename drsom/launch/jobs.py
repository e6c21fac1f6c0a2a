"""One Hydra job: what ``run.py`` does with a composed config, whichever launcher started it.

The policy for errors differs between a single run and a sweep. A single run ends a user's mistake
with one line and a non-zero exit. In a sweep that would end the launching process (basic
launcher) or lose the job's result (submitit, joblib), so the error is raised as a ``JobError``
instead: Hydra records that job as failed, runs the others, and prints the one line at the end.
A run that another process is training is skipped in a sweep, not an error: that process owns it.

This module is light to import (torch is imported inside ``run``): the launching process of a
sweep imports it, and must never initialise torch, CUDA or wandb.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("drsom")

# configs/hydra/launcher/joblib.yaml takes the place of the joblib plugin's config of the same name
# on purpose (it is a complete launcher config). Hydra 1.3 still checks such a file against the
# plugin's schema and warns that this is deprecated: in the launching process and again in every
# worker, for every job. The check cannot fail, so exactly that warning is silenced. The filter
# reaches the workers because they import this module (the task function refers to it) before
# they compose a job's config.
warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema",
    category=UserWarning,
)


# A single run's exit status when the user must fix something first (a value, the dataset, the
# results store: one line says what): the usage-error status of Unix tools, so a script tells it
# from a run that failed (1) or a run another process holds (1).
BAD_INPUT = 2


class JobError(CompactHydraException):
    """A user error in one job of a sweep; Hydra prints it as one line, without a traceback."""


def run(cfg: DictConfig, *, base_dir: Path) -> str | dict:
    """Train, resume or skip the run of ``cfg``; return its status ("busy": skipped), or in a
    trial of a tuning sweep what the sweeper tells optuna (``drsom.launch.tuning.trial_result``)."""
    from drsom.job.runner import USER_ERRORS, run_folder
    from drsom.job.runner import run as run_config
    from drsom.launch.tuning import trial_result, tuning_objective
    from drsom.store.folder import RunBusy
    from drsom.training.world import launched_size

    sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    by = tuning_objective()
    name_slurm_job(cfg)
    processes = launched_size()
    if sweep and processes > 1 and cfg.trainer.get("processes") is None:
        # the launching process names the grid's runs (status, tuning trials) without a launch
        # of its own: it must be told how many processes each run has
        raise JobError(
            f"error: this sweep's jobs run on {processes} processes: set "
            f"trainer.processes={processes} in the sweep, so that it names its runs as they train"
        )
    try:
        status = run_config(cfg, base_dir=base_dir, prune=_pruner() if by else None)
        if by:
            return trial_result(run_folder(cfg, base_dir).read_summary() or {}, by)
        return status
    except RunBusy as exc:
        if not sweep:
            sys.exit(f"error: {exc}")
        # A second launch of the sweep, or a requeued job whose predecessor still holds the
        # folder: the other process owns this run, and this job has nothing to do.
        log.warning(f"skipped: {exc}")
        return {"status": "busy", "score": None, "epochs": 0, "run_id": None} if by else "busy"
    except USER_ERRORS as exc:
        if sweep:
            raise JobError(f"error: {exc}") from None
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to continue from the last checkpoint")


def _pruner():
    """The study's pruner for this trial (optuna is imported only when the sweep has one)."""
    node = HydraConfig.get().sweeper.get("pruner")
    if node is None:
        return None
    from drsom.store.study import trial_pruner

    return trial_pruner(node)


def name_slurm_job(cfg: DictConfig) -> None:
    """In a SLURM job started by submitit: name the job after its run id, and log the pair.

    The launcher submits one array per sweep, whose tasks share one name until they start; a
    running task is its own job, and renaming it makes squeue and sacct say which run it trains.
    Best effort: a cluster that refuses the update only costs the name.
    """
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or not job:
        return
    from omegaconf import OmegaConf

    from drsom.store.identity import run_id

    try:
        rid = run_id(OmegaConf.to_container(cfg, resolve=True))
    except Exception:  # an invalid config: the runner reports it in its own words
        return
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    # The last task of an array has the array's own id as its job id, and `JobId=<that>` would
    # rename every task: an array task is named by <array>_<task>.
    job = f"{array}_{task}" if array and task else job
    log.info(f"SLURM job {job}: {rid}")
    try:
        subprocess.run(
            ["scontrol", "update", f"JobId={job}", f"JobName={rid}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning(f"could not name SLURM job {job} {rid}: {exc}")
