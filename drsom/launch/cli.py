"""Train one configuration: ``drsom-run optimizer=drsom model=resnet18 [key=value ...]``.

Also ``python -m drsom``, and ``python run.py`` in a checkout (a shim calling ``main``). The configs
are the package's own (drsom/configs; ``configs/`` in a checkout links there). Results go to
``<results_dir>/<run_id>/``; rerunning the same command resumes an interrupted run and skips a
finished one (``force=true`` redoes it).

Relative paths of the config (``results_dir``, ``data.root``) are taken from ``base_dir``:
the current directory for the installed command, the repository root for a checkout's ``run.py``
(what it always did, from wherever it is launched).

Sweeps: ``drsom-run -m hydra/launcher=slurm experiment=<name> seed=0,1,2`` runs each point of
the grid as its own job (docs/cluster.md); launching the same sweep again
fills the gaps: finished runs are skipped, the others resume.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from drsom import CONFIG_DIR
from drsom.launch import jobs  # light: torch, CUDA and wandb start inside the job, never here
from drsom.paths import try_write

# Hydra's flags that print something instead of running a job (no log folder is made).
NO_OUTPUT_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc")


def main(base_dir: Path | None = None) -> None:
    """The command line: Hydra parses ``sys.argv`` (overrides, ``-m``, ``--cfg``, ...)."""
    if problem := torchrun_sweep_problem(sys.argv[1:]) or hydra_output_problem(
        sys.argv[1:], Path(os.getcwd())
    ):
        print(problem, file=sys.stderr)
        sys.exit(jobs.BAD_INPUT)
    app(Path.cwd() if base_dir is None else Path(base_dir).resolve())()


def app(base_dir: Path) -> Callable[[], None]:
    """Hydra's application, with relative config paths taken from ``base_dir``.

    The launchers that run jobs in other processes (submitit, joblib) pickle the task function;
    cloudpickle sends a closure by value, ``base_dir`` with it, so every job resolves paths as
    the launching process does, whatever its own working directory. Hydra would name the job after
    this module; configs/config.yaml names it ``run`` (its log: ``run.log``), as every door had it.
    The configs are read from the package's folder, wherever it is installed.
    """

    def run(cfg: DictConfig) -> str | dict:
        return jobs.run(cfg, base_dir=base_dir)

    run.base_dir = base_dir  # the tuning sweeper finds the store (and its studies) from it
    return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(run)


def torchrun_sweep_problem(argv: list[str]) -> str | None:
    """A sweep under torchrun would run in every process, each drawing its own grid or trials."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and any(
        a in ("-m", "--multirun") for a in argv
    ):
        return (
            "error: run.py -m under torchrun: every process would run its own sweep; torchrun one "
            "run at a time, or sweep runs of several processes with hydra/launcher=slurm "
            "hydra.launcher.tasks_per_node=N (docs/cluster.md)"
        )
    return None


def hydra_output_problem(argv: list[str], cwd: Path) -> str | None:
    """Why Hydra could not create its log folder of this launch (one line), or None.

    Hydra makes ``hydra.run.dir`` (``hydra.sweep.dir`` with -m; default: under ``outputs/`` or
    ``multirun/`` of the working directory) before any of our code runs, and reports a failure as
    a traceback. So the folder the log would go in is tried here first: the nearest existing
    ancestor of the path given on the command line (a relative one is taken from ``cwd``).
    """
    if any(a.split("=", 1)[0] in NO_OUTPUT_FLAGS for a in argv):
        return None  # help, printing the config, ...: Hydra makes no folder for those
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(key)]
    target = cwd / Path(given[-1].split("${", 1)[0] or ".") if given else cwd
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        try_write(target)
    except OSError as exc:
        why = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno, exc.errno)})"
        option = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        return (
            f"error: cannot create Hydra's log folder of this launch under {target}: {why}; "
            f"run from a writable folder or give {option}=<a writable folder>"
        )
    return None


if __name__ == "__main__":
    main()
