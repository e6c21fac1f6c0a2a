"""The shipped results reproduce from the landed code: a change that alters what a run computes
cannot land unnoticed (rerun the experiments and ship their new results with it instead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsom.run_folder import RunDir
from drsom.run_record import machine
from drsom.sweeps import sweep_runs
from drsom.tools import reproduce

REPO = Path(__file__).resolve().parents[1]


def shipped_drsom_run() -> RunDir:
    """DRSOM (the default config), seed 0, of the shipped digits_drsom_vs_baselines_cnn study:
    the folder its grid names, so the test follows the config's run id."""
    runs = sweep_runs("digits_drsom_vs_baselines_cnn", base_dir=REPO)
    (run,) = [r for r in runs if "optimizer=drsom" in r.overrides and "seed=0" in r.overrides]
    return run.run_dir


def test_a_shipped_digits_run_reproduces_its_first_five_epochs(capsys):
    shipped = shipped_drsom_run()
    assert shipped.metrics.exists(), f"{shipped.path}: the grid's run is part of the repository"
    made_on = (shipped.read_summary() or {}).get("machine")
    if made_on != machine():
        # Float kernels differ between processors (AVX2 vs AVX-512, math library builds): a
        # bitwise rerun is only a claim about the same kind of machine.
        pytest.skip(f"shipped runs were made on {made_on}; this machine is {machine()}")
    assert reproduce.main([str(shipped.path), "--epochs", "5"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for column in ("train_loss", "test_acc", "radius_mean", "accepted_mean", "forward", "grad"):
        assert f"metrics.csv {column}: identical" in out
    assert "steps.csv rho: identical" in out  # its first diagnostics row: step 50, epoch 5
