"""Train one configuration: ``python run.py optimizer=drsom model=resnet18 [key=value ...]``.

Configs live in configs/ (see README). Results go to ``<results_dir>/<run_id>/``; rerunning the
same command resumes an interrupted run and skips a finished one (``force=true`` redoes it).

Sweeps: ``python run.py -m hydra/launcher=slurm experiment=<name> seed=0,1,2`` runs each point of
the grid as its own job (README, "Sweeps on a SLURM cluster"); launching the same sweep again
fills the gaps: finished runs are skipped, the others resume.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from drsom import jobs  # light: torch, CUDA and wandb start inside the job, never here

ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> str:
    return jobs.run(cfg, base_dir=ROOT)


if __name__ == "__main__":
    main()
