"""Shared helpers of the tests: seconds-long runs on a fake CIFAR-10, configs, run folders."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drsom.job import runner
from drsom.store.folder import RunDir
from drsom.training.loop import WALL_CLOCK_COLUMNS

REPO = Path(__file__).resolve().parents[2]


def tiny(cifar_root: Path, results: Path, *overrides: str) -> list[str]:
    """Overrides for a seconds-long run: 128 fake CIFAR images (25 more held out for validation),
    the small CNN, batch 32.

    ``overrides`` come last; for a key given twice Hydra takes the last value.
    """
    return [
        "optimizer=drsom",  # what these tests were written for (the default is drsom_adaptive)
        "data=cifar10",
        f"data.root={cifar_root}",
        "data.download=false",
        "data.verify=false",
        "data.val_size=25",
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


def compose_configs(*override_lists: list[str]) -> list[dict]:
    """The suite's config.yaml composed once per override list and resolved, as plain dicts."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfgs = [compose("config", overrides=list(o)) for o in override_lists]
    return [OmegaConf.to_container(cfg, resolve=True) for cfg in cfgs]


def compose_config(*overrides: str) -> dict:
    """The suite's config.yaml composed with ``overrides`` and resolved, as a plain dict."""
    return compose_configs(list(overrides))[0]


def without_wall_clock(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Metric rows less the wall-clock columns: what two runs of one config must agree on."""
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_COLUMNS} for r in rows]


def assert_same_run(resumed: RunDir, whole: RunDir) -> None:
    """The same metrics (wall clock aside), diagnostics and final weights as a run never stopped."""
    assert resumed.name == whole.name
    assert without_wall_clock(read_csv(resumed.metrics)) == without_wall_clock(
        read_csv(whole.metrics)
    )
    if whole.steps.exists():
        assert resumed.steps.read_text() == whole.steps.read_text()
    a = whole.load_checkpoint()["trainer"]["model"]
    b = resumed.load_checkpoint()["trainer"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def summary_of(rd: RunDir) -> dict:
    """A run folder's summary.json, read strictly (a damaged file is an error here)."""
    return json.loads(rd.summary.read_text())


def wait_for(condition, what: str, timeout: float = 120, poll: float = 0.02) -> None:
    """Poll ``condition`` every ``poll`` s; fail naming ``what`` once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def cli(
    *args: str, cwd: Path, env: dict | None = None, run_dir: bool = True
) -> subprocess.CompletedProcess:
    """``python run.py *args`` in ``cwd`` without wandb or Hydra's full tracebacks, as users run it.

    ``env`` adds variables (None removes one); ``run_dir`` puts Hydra's output folder in ``cwd``.
    """
    environ = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    environ.pop("HYDRA_FULL_ERROR", None)
    environ.update(env or {})
    hydra_dir = [f"hydra.run.dir={cwd / 'hydra'}"] if run_dir else []
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *hydra_dir, *args],
        cwd=cwd,
        env={k: v for k, v in environ.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=300,
    )
