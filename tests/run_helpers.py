"""Shared helpers of the runner and sweep tests: seconds-long runs on a fake CIFAR-10."""

from __future__ import annotations

import csv
from pathlib import Path

from hydra import compose, initialize_config_dir

from drsom import runner
from drsom.run_folder import RunDir

REPO = Path(__file__).resolve().parents[1]


def tiny(cifar_root: Path, results: Path, *overrides: str) -> list[str]:
    """Overrides for a seconds-long run: 128 fake CIFAR images, the small CNN, batch 32.

    ``overrides`` come last; for a key given twice Hydra takes the last value.
    """
    return [
        "data=cifar10",
        f"data.root={cifar_root}",
        "data.download=false",
        "data.verify=false",
        "data.train_subset=128",
        "model=cnn",
        "trainer=quick",
        "trainer.device=cpu",
        "trainer.log_every_steps=3",
        "logger.mode=disabled",
        f"results_dir={results}",
        *overrides,
    ]


def run_inprocess(overrides: list[str]) -> str:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return runner.run(cfg)


def only_run(results: Path) -> RunDir:
    (folder,) = [p for p in results.iterdir() if p.is_dir()]
    return RunDir(folder)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
