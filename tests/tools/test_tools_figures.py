"""drsom figures (drsom/tools/figures.py, drsom/analysis/build.py): both folders replaced, or
nothing touched."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from analysis_store import EXPERIMENT, merged_store

from drsom.analysis import build
from drsom.tools import figures as figures_tool


def _build_figures(store: Path, out: Path, *extra: str) -> int:
    argv = ["--results", str(store), "--figures", str(out / "figures")]
    return figures_tool.main([*argv, "--tables", str(out / "tables"), *extra])


def test_build_figures_replaces_both_folders_and_leaves_nothing_stale(store, tmp_path):
    (tmp_path / "figures" / "gone").mkdir(parents=True)
    (tmp_path / "figures" / "gone" / "stale.png").write_text("old")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "stale.md").write_text("old")
    assert _build_figures(store, tmp_path) == 0
    drawn = {p.name for p in (tmp_path / "figures" / EXPERIMENT).iterdir()}
    # every metric per epoch, test accuracy against both cost axes, png and pdf
    assert "cnn-train_eval_loss-epoch.pdf" in drawn and "cnn-test_acc-grad_equiv.png" in drawn
    # train and test accuracy against gradient equivalents, as against epochs
    assert (
        "cnn-train_eval_acc-grad_equiv.png" in drawn
        and "cnn-train_eval_loss-grad_equiv.png" not in drawn
    )
    assert "cnn-test_acc-time.png" in drawn and "cnn-train_acc-time.png" not in drawn
    # the train accuracy drawn is the evaluation-mode one; the running mean only on request
    assert "cnn-train_eval_acc-epoch.pdf" in drawn and "cnn-train_acc-epoch.pdf" not in drawn
    assert not (tmp_path / "figures" / "gone").exists()
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        f"{EXPERIMENT}{s}" for s in (".md", ".csv", ".runs.csv", ".ci.csv", ".paired.csv", ".tex")
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_figures_with_a_wrong_reference_leaves_everything_as_it_was(store, tmp_path):
    for folder in ("figures", "tables"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "kept.txt").write_text(folder)
    assert _build_figures(store, tmp_path, "--reference", str(tmp_path / "nowhere.csv")) == 2
    assert (tmp_path / "figures" / "kept.txt").read_text() == "figures"
    assert (tmp_path / "tables" / "kept.txt").read_text() == "tables"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "tables"]


@pytest.mark.parametrize("store_is", ["missing", "empty"])
def test_build_figures_from_a_store_without_runs_leaves_everything_as_it_was(
    tmp_path, capsys, store_is
):
    for folder in ("figures", "tables"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "kept.txt").write_text(folder)
    runs = tmp_path / "runs"
    if store_is == "empty":
        runs.mkdir()
    assert _build_figures(runs, tmp_path) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: no readable runs in {runs}",
        "error: figures not replaced (see above)",
    ]
    assert (tmp_path / "figures" / "kept.txt").read_text() == "figures"
    assert (tmp_path / "tables" / "kept.txt").read_text() == "tables"


def test_build_figures_says_which_folder_was_replaced_when_the_second_rename_fails(
    store, tmp_path, monkeypatch, capsys
):
    renames = []

    def rename(target, new):
        renames.append(target.name)
        if target.name == "tables":
            raise OSError(18, "Invalid cross-device link")
        return original(target, new)

    original = build._replace
    monkeypatch.setattr(build, "_replace", rename)
    monkeypatch.setattr(build, "draw_curves", lambda *args, **kwargs: [])  # seconds: not tested
    monkeypatch.setattr(build, "draw_profiles", lambda *args, **kwargs: [])
    assert _build_figures(store, tmp_path) == 1
    assert renames == ["figures", "tables"]
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(
        f"{tmp_path / 'figures'} was replaced, {tmp_path / 'tables'} was not: rerun"
    )


def test_build_figures_failing_midway_leaves_everything_as_it_was(store, tmp_path, monkeypatch):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "kept.txt").write_text("figures")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build, "write_tables", full_disk)  # after the curves, before profiles
    monkeypatch.setattr(build, "draw_curves", lambda *args, **kwargs: [])  # seconds: not tested
    assert _build_figures(store, tmp_path) == 1
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]


def test_build_figures_draws_performance_profiles_across_the_experiments(
    store, lr_sweep, tmp_path, capsys
):
    both = merged_store(tmp_path, store, lr_sweep)
    assert _build_figures(both, tmp_path, "--targets", "90") == 0
    # workloads: the experiment's digits / cnn, and the ad-hoc runs' digits / cnn, cifar10 / cnn
    drawn = sorted(p.name for p in (tmp_path / "figures" / "profiles").iterdir())
    assert drawn == ["grad_equiv-to-90.pdf", "grad_equiv-to-90.png"]


def test_build_figures_without_a_models_weights_leaves_out_only_gradient_equivalents(
    store, tmp_path, capsys
):
    # issue 21: a model whose oracles were never timed still gets its tables and figures; only
    # the gradient-equivalent columns, axes and profiles are left out, said once and in a note
    weights = tmp_path / "none.json"
    weights.write_text("{}")
    assert _build_figures(store, tmp_path, "--cost-weights", str(weights)) == 0
    err = capsys.readouterr().err
    assert "no cost weights for model 'cnn' in " in err and "gradient equivalents left out" in err
    drawn = {p.name for p in (tmp_path / "figures" / EXPERIMENT).iterdir()}
    assert "cnn-test_acc-epoch.png" in drawn and "cnn-test_acc-time.png" in drawn
    assert not [name for name in drawn if "grad_equiv" in name]
    text = (tmp_path / "tables" / f"{EXPERIMENT}.md").read_text()
    assert "grad-equiv to" not in text and "train s to 90%" in text
    assert "Gradient equivalents left out for cnn: no cost weights in none.json" in text
    # the numbers that do not need weights are the ones the weights file gives
    table = pd.read_csv(tmp_path / "tables" / f"{EXPERIMENT}.csv").set_index("optimizer")
    assert table.loc["drsom", "epochs_to_90_mean"] == pytest.approx(8 / 3)
    assert table.loc["drsom", "seconds_to_90_mean"] == pytest.approx((20 + 31 + 32) / 3)


def test_a_profile_is_drawn_for_a_target_only_over_the_experiments_that_declare_it(
    store, lr_sweep, tmp_path, capsys
):
    import json

    both = merged_store(tmp_path, store, lr_sweep)
    # 90% is declared for both experiments (three workloads); 50% only for the digits one
    (tmp_path / "targets.json").write_text(json.dumps({EXPERIMENT: [50, 90], "default": [90]}))
    assert _build_figures(both, tmp_path) == 0
    drawn = sorted(p.name for p in (tmp_path / "figures" / "profiles").iterdir())
    assert drawn == ["grad_equiv-to-90.pdf", "grad_equiv-to-90.png"]
    assert "no performance profile for 50%: fewer than 2 workloads" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "tables" / f"{EXPERIMENT}.csv")
    assert {"epochs_to_50_mean", "epochs_to_90_mean"} <= set(table.columns)
