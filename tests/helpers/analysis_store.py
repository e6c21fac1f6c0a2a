"""Results stores with known values, shared by the analysis and tools tests.

The synthetic store is the grid of ``digits_drsom_vs_baselines_cnn`` (4 optimizers x 3 seeds,
real composed configs, so the run ids are the ones a sweep writes) with hand-made metrics:

* drsom: 3 finished seeds, final test acc 0.95 / 0.96 / 0.97, reaching 90% at epochs 2, 3, 3;
* adam: 2 finished (final 0.92, 0.94; only one ever reaches 93%) and 1 diverged in epoch 3;
* adabelief: 1 finished, 1 still running after 2 epochs, 1 never started (no folder);
* sgd: 3 finished, never reaching 90%.

Beside every store, its cost weights file (``costs.default_path``): the cnn's forward weighs 0.5
of a gradient and an HVP 2, so DRSOM's epoch (22 forwards, 11 gradients, 22 HVPs) is
11 + 0.5 * 11 + 2 * 22 = 60.5 gradient equivalents, another optimizer's (22 forwards, 11
gradients) 11 + 0.5 * 11 = 16.5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from run_helpers import compose_configs

from drsom.analysis.costs import default_path
from drsom.analysis.runs import Run
from drsom.store.folder import RunDir, write_csv
from drsom.store.identity import run_id
from drsom.store.state import FINAL_KEYS
from drsom.training.loop import METRIC_COLUMNS

EXPERIMENT = "digits_drsom_vs_baselines_cnn"

# test accuracy per epoch of each (optimizer, seed); None: the run folder does not exist
TEST_ACC = {
    ("drsom", 0): [0.50, 0.91, 0.92, 0.94, 0.95],
    ("drsom", 1): [0.60, 0.85, 0.92, 0.93, 0.96],
    ("drsom", 2): [0.55, 0.89, 0.90, 0.95, 0.97],
    ("adam", 0): [0.70, 0.80, 0.85, 0.90, 0.92],
    ("adam", 1): [0.70, 0.80, 0.85, 0.90, 0.94],
    ("adam", 2): [0.70, 0.80],  # diverged in epoch 3
    ("adabelief", 0): [0.80, 0.85, 0.88, 0.92, 0.93],
    ("adabelief", 1): [0.80, 0.86],  # still running
    ("adabelief", 2): None,
    ("sgd", 0): [0.30, 0.50, 0.60, 0.70, 0.80],
    ("sgd", 1): [0.30, 0.50, 0.60, 0.70, 0.82],
    ("sgd", 2): [0.30, 0.50, 0.60, 0.70, 0.84],
}
STATUS = {("adam", 2): "diverged", ("adabelief", 1): "running"}


def metric_rows(optimizer: str, seed: int, accs: list[float]) -> list[dict]:
    """Rows with known costs: 10 s + seed per epoch, 11 gradients and (DRSOM) 22 HVPs per epoch.

    Validation accuracy peaks at epoch 4 (test - 0.05, but test + 0.03 there), so the epoch it
    selects is never the last, nor (drsom, adam) the one of the highest test accuracy; the clean
    train accuracy is test + 0.02."""
    rows = []
    for i, acc in enumerate(accs):
        e = i + 1
        rows.append(
            {
                "epoch": e,
                "step": 11 * e,
                "train_loss": 1.0 / e,
                "train_acc": acc - 0.05,
                "test_loss": 1.2 / e,
                "test_acc": acc,
                "val_loss": 1.1 / e,
                "val_acc": acc + (0.03 if e == 4 else -0.05),
                "train_eval_loss": 0.9 / e,
                "train_eval_acc": acc + 0.02,
                "lr": 0.1,
                "train_seconds": 10.0 * e + seed,
                "total_seconds": 12.0 * e + seed,
                "forward": 22 * e,
                "grad": 11 * e,
                "hvp": 22 * e if optimizer == "drsom" else 0,
            }
        )
    return rows


def write_run(root: Path, cfg: dict, rows: list[dict], status: str) -> RunDir:
    folder = RunDir(root / run_id(cfg))
    folder.write_config(cfg)
    write_csv(folder.metrics, METRIC_COLUMNS, rows)
    summary = {"run_id": folder.name, "status": status, "device": "cpu", "epoch": len(rows)}
    summary["final"] = {k: rows[-1].get(k) for k in FINAL_KEYS} if rows else {}
    folder.write_summary(summary)
    return folder


# how the synthetic runs' configs say to show them (display, colour)
SHOWN = {"drsom": ("DRSOM", "#000000"), "sgd": ("SGD", "#1f77b4"), "adam": ("Adam", "#ff7f0e")}


def synthetic_run(optimizer: str, seed: int, accs: list[float]) -> Run:
    display, color = SHOWN.get(optimizer, (optimizer, None))
    cfg = {
        "experiment": "x",
        "data": {"name": "cifar10"},
        "model": {"name": "resnet34"},
        # drsom_twin: drsom's config under a second label (the same target and arguments)
        "optimizer": {"_target_": f"x.{optimizer.split('_')[0]}", "label": optimizer}
        | {"display": display, "color": color},
        "seed": seed,
    }
    metrics = pd.DataFrame(metric_rows(optimizer, seed, accs))
    return Run(f"{optimizer}-s{seed}", Path("."), cfg, {"status": "finished"}, metrics)


WEIGHTS = {"forward": 0.5, "grad": 1.0, "hvp": 2.0, "batch_size": 128, "threads": 2}
WEIGHTS |= {"machine": {"cpu": "Test CPU", "cpu_capability": "AVX2"}}
WEIGHTS |= {"measured_at": "2026-01-02T03:04:05+00:00"}


def write_weights(path: Path, models=("cnn",)) -> Path:
    """A cost weights file with :data:`WEIGHTS` for ``models``."""
    path.write_text(json.dumps({m: WEIGHTS for m in models}))
    return path


def write_store(root: Path) -> Path:
    """The synthetic store of the module docstring, written under ``root``."""
    points = [key for key, accs in TEST_ACC.items() if accs is not None]
    jobs = [[f"experiment={EXPERIMENT}", f"optimizer={o}", f"seed={s}"] for o, s in points]
    for (optimizer, seed), cfg in zip(points, compose_configs(*jobs), strict=True):
        status = STATUS.get((optimizer, seed), "finished")
        write_run(root, cfg, metric_rows(optimizer, seed, TEST_ACC[optimizer, seed]), status)
    write_weights(default_path(root))
    return root


def write_lr_sweep(root: Path) -> Path:
    """``python run.py -m optimizer=adam optimizer.lr=1e-3,1e-2 data=digits model=cnn`` (seed 0,
    no experiment file), plus one SGD run on the fake CIFAR-10: three variants, ad-hoc runs."""
    base = ["data=digits", "model=cnn", "trainer.epochs=3"]
    cfgs = compose_configs(
        [*base, "optimizer=adam", "optimizer.lr=1e-3"],
        [*base, "optimizer=adam", "optimizer.lr=1e-2"],
        ["data=cifar10", "model=cnn", "trainer.epochs=3", "optimizer=sgd"],
    )
    for cfg, accs in zip(cfgs, ([0.6, 0.9, 0.97], [0.2, 0.25, 0.3], [0.4, 0.5, 0.6]), strict=True):
        write_run(root, cfg, metric_rows(cfg["optimizer"]["label"], 0, accs), "finished")
    write_weights(default_path(root))
    return root


def merged_store(root: Path, *stores: Path) -> Path:
    """The runs of ``stores`` copied into one store, ``root/runs``, with the weights beside it."""
    merged = root / "runs"
    for source in stores:
        shutil.copytree(source, merged, dirs_exist_ok=True)
    write_weights(default_path(merged))
    return merged
