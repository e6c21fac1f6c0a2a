"""The shipped results reproduce from the landed code: a change that alters what a run computes
cannot land unnoticed (rerun the experiments and ship their new results with it instead)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsom.analysis.runs import load_store
from drsom.launch.sweeps import sweep_runs
from drsom.store.folder import RunDir
from drsom.store.record import machine
from drsom.tools import reproduce
from drsom.tools.select import select

REPO = Path(__file__).resolve().parents[2]
SELECTED = REPO / "results" / "selected"


def shipped_drsom_run() -> RunDir:
    """DRSOM (tuned), seed 0, of the shipped digits_tuned_cnn study: the folder its grid names
    with drsom-select's shipped configs, so the test follows the config's run id."""
    search = f"hydra.searchpath=[file://{SELECTED}]"
    runs = sweep_runs("digits_tuned_cnn", [search, "seed=0"], base_dir=REPO)
    (run,) = [r for r in runs if "optimizer=tune_digits_cnn/drsom" in r.overrides]
    return run.run_dir


@pytest.mark.parametrize(
    "tuning, labels",
    [
        ("tune_digits_cnn", {"drsom", "drsom_hvp", "adam", "adabelief", "sgd"}),
        (
            "tune_cifar10_jpeg_cnn",
            {"drsom", "drsom_seed", "drsom_hvp", "adam", "adabelief", "sgd"},
        ),
    ],
)
def test_the_shipped_selection_is_what_drsom_select_makes_of_the_shipped_trials(tuning, labels):
    store = load_store(REPO / "results" / "runs", report=lambda line: None)
    _, configs = select(store, tuning, studies_dir=REPO / "results" / "studies")
    assert set(configs) == labels
    for label, text in configs.items():
        shipped = SELECTED / "optimizer" / tuning / f"{label}.yaml"
        assert shipped.read_text() == text, f"{shipped}: rerun drsom-select"


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
    columns = ("train_loss", "test_acc", "val_acc", "train_eval_acc", "radius_mean", "forward")
    for column in (*columns, "accepted_mean", "grad"):
        assert f"metrics.csv {column}: identical" in out
    assert "steps.csv rho: identical" in out  # its first diagnostics row: step 50, epoch 5
