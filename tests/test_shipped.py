"""The shipped results reproduce from the landed code: a change that alters what a run computes
cannot land unnoticed (rerun the experiments and ship their new results with it instead)."""

from __future__ import annotations

from pathlib import Path

from drsom.tools import reproduce

REPO = Path(__file__).resolve().parents[1]

# DRSOM (the default config) in the shipped digits_drsom_vs_baselines_cnn study, seed 0
SHIPPED = REPO / "results" / "runs" / "digits-cnn-drsom-88e4e872fe-s0"


def test_a_shipped_digits_run_reproduces_its_first_five_epochs(capsys):
    assert (SHIPPED / "metrics.csv").exists(), "the shipped run is part of the repository"
    assert reproduce.main([str(SHIPPED), "--epochs", "5"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for column in ("train_loss", "test_acc", "radius", "accept_rate", "forward", "grad"):
        assert f"metrics.csv {column}: identical" in out
    assert "steps.csv rho: identical" in out  # its first diagnostics row: step 50, epoch 5
