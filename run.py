"""Train one configuration: ``python run.py optimizer=drsom model=resnet18 [key=value ...]``.

Configs live in configs/ (see README). Results go to ``<results_dir>/<run_id>/``; rerunning the
same command resumes an interrupted run and skips a finished one (``force=true`` redoes it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> str:
    # Imported inside the job: a launcher's parent process never initialises torch or wandb.
    from drsom.runner import USER_ERRORS, run

    try:
        return run(cfg, base_dir=ROOT)
    except USER_ERRORS as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to continue from the last checkpoint")


if __name__ == "__main__":
    main()
