"""drsom-plot-curves (drsom/tools/plot_curves.py): one file per model and metric, references."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from analysis_store import EXPERIMENT, SHOWN, synthetic_run

from drsom.analysis import figures
from drsom.analysis.runs import (
    load_reference,
    load_store,
    metrics_frame,
)
from drsom.tools import plot_curves


def test_plot_curves_writes_png_and_pdf_per_model_and_metric(store, tmp_path):
    out = tmp_path / "figures"
    args = ["--results", str(store), "--out", str(out), "--metrics", "test_acc", "train_loss"]
    assert plot_curves.main(args) == 0
    folder = out / EXPERIMENT
    for metric in ("test_acc", "train_loss"):
        for suffix in (".png", ".pdf"):
            path = folder / f"cnn-{metric}-epoch{suffix}"
            assert path.stat().st_size > 10_000, path
    image = plt.imread(folder / "cnn-test_acc-epoch.png")
    assert image.shape[0] > 600 and image.std() > 0.05  # a drawn figure, not a blank canvas


def test_reference_curves_are_dashed_in_the_optimizers_colour_and_in_percent(tmp_path):
    published = tmp_path / "curves.csv"
    pd.DataFrame(
        {
            "model": ["resnet34"] * 4 + ["vgg11"] * 2,
            "optimizer": ["sgd", "sgd", "adabelief", "adabelief", "sgd", "sgd"],
            "hyperparameters": "x",
            "epoch": [1, 2, 1, 2, 1, 2],
            "train_acc": [40.0, 60.0, 50.0, 70.0, 1.0, 2.0],
            "test_acc": [45.0, 65.0, 55.0, 75.0, 1.0, 2.0],
        }
    ).to_csv(published, index=False)
    reference = load_reference(published)
    assert reference["test_acc"].max() == pytest.approx(0.75)  # fractions, like the store
    runs = [synthetic_run("sgd", 0, [0.5, 0.6]), synthetic_run("drsom", 0, [0.55, 0.7])]
    facts = {"data": "cifar10", "model": "resnet34"}
    ref = plot_curves._reference_for(reference, facts, "epoch")
    frame, shown = metrics_frame(runs), figures.looks(runs)
    fig = figures.curve_figure(frame, "test_acc", "epoch", "t", reference=ref, shown=shown)
    dashed = [li for li in fig.axes[0].get_lines() if li.get_linestyle() == "--"]
    # sgd has our runs and published ones; adabelief is not in the figure; vgg11 is another model
    assert [li.get_label() for li in dashed] == ["SGD (published, 1 run)"]
    assert dashed[0].get_color() == SHOWN["sgd"][1]
    np.testing.assert_allclose(dashed[0].get_ydata(), [45.0, 65.0])
    plt.close(fig)
    assert (
        plot_curves._reference_for(reference, {"data": "digits", "model": "cnn"}, "epoch") is None
    )


def test_a_wrong_reference_file_is_one_line_and_exit_code_2(store, tmp_path, capsys):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("model,epoch\nresnet34,1\n")
    for path in (wrong, tmp_path / "absent.csv"):
        assert plot_curves.main(["--results", str(store), "--reference", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --reference {path}") and err.count("\n") == 1


def test_legend_names_a_second_label_of_the_same_config_and_lost_runs():
    runs = [synthetic_run("drsom", 0, [0.5]), synthetic_run("sgd", 0, [0.5])]
    runs += [synthetic_run("drsom_twin", 0, [0.5]), synthetic_run("drsom_twin", 1, [0.5])]
    runs[-1].summary["status"] = "diverged"
    runs[-1].config["seed"] = 1
    # seed 0 is DRSOM's config under a second name; seed 1 has no DRSOM twin and diverged
    assert plot_curves.legend_notes(runs) == {runs[-1].variant: "1 diverged; same as DRSOM"}


def test_ad_hoc_runs_are_drawn_per_dataset_and_model_one_line_per_variant(lr_sweep, tmp_path):
    args = ["--results", str(lr_sweep), "--out", str(tmp_path), "--metrics", "test_acc"]
    assert plot_curves.main(args) == 0
    names = sorted(p.name for p in (tmp_path / "default").glob("*.png"))
    assert names == ["cifar10-cnn-test_acc-epoch.png", "digits-cnn-test_acc-epoch.png"]
    frame = metrics_frame(load_store(lr_sweep))
    digits = frame[frame["data"] == "digits"]
    fig = figures.curve_figure(
        digits, "test_acc", "epoch", "t", shown=figures.looks(load_store(lr_sweep))
    )
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Adam lr=0.001 (1 seed)", "Adam lr=0.01 (1 seed)"]
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[60, 90, 97], [20, 25, 30]]
    assert lines[0].get_color() != lines[1].get_color()
    plt.close(fig)
