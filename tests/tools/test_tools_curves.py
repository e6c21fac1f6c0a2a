"""drsom curves (drsom/tools/curves.py, drsom/analysis/curves.py): one file per model and metric,
references, and only what is drawn is checked."""

from __future__ import annotations

import unittest.mock
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from analysis_store import (
    EXPERIMENT,
    SHOWN,
    merged_store,
    metric_rows,
    synthetic_run,
    write_run,
)
from run_helpers import compose_configs

from drsom.analysis import curves, figures
from drsom.analysis.runs import (
    load_reference,
    load_store,
    metrics_frame,
)
from drsom.tools import curves as curves_tool


def test_plot_curves_writes_png_and_pdf_per_model_and_metric(store, tmp_path):
    out = tmp_path / "figures"
    args = ["--results", str(store), "--out", str(out), "--metrics", "test_acc", "train_loss"]
    assert curves_tool.main(args) == 0
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
    ref = curves._reference_for(reference, facts, "epoch")
    frame, shown = metrics_frame(runs), figures.looks(runs)
    fig = figures.curve_figure(frame, "test_acc", "epoch", "t", reference=ref, shown=shown)
    dashed = [li for li in fig.axes[0].get_lines() if li.get_linestyle() == "--"]
    # sgd has our runs and published ones; adabelief is not in the figure; vgg11 is another model
    assert [li.get_label() for li in dashed] == ["SGD (published, 1 run)"]
    assert dashed[0].get_color() == SHOWN["sgd"][1]
    np.testing.assert_allclose(dashed[0].get_ydata(), [45.0, 65.0])
    plt.close(fig)
    assert curves._reference_for(reference, {"data": "digits", "model": "cnn"}, "epoch") is None


def test_a_wrong_reference_file_is_one_line_and_exit_code_2(store, tmp_path, capsys):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("model,epoch\nresnet34,1\n")
    for path in (wrong, tmp_path / "absent.csv"):
        assert curves_tool.main(["--results", str(store), "--reference", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --reference {path}") and err.count("\n") == 1


def test_legend_names_a_second_label_of_the_same_config_and_lost_runs():
    runs = [synthetic_run("drsom", 0, [0.5]), synthetic_run("sgd", 0, [0.5])]
    runs += [synthetic_run("drsom_twin", 0, [0.5]), synthetic_run("drsom_twin", 1, [0.5])]
    runs[-1].summary["status"] = "diverged"
    runs[-1].config["seed"] = 1
    # seed 0 is DRSOM's config under a second name; seed 1 has no DRSOM twin and diverged
    assert curves.legend_notes(runs) == {runs[-1].variant: "1 diverged; same as DRSOM"}


def test_ad_hoc_runs_are_drawn_per_dataset_and_model_one_line_per_variant(lr_sweep, tmp_path):
    args = ["--results", str(lr_sweep), "--out", str(tmp_path), "--metrics", "test_acc"]
    assert curves_tool.main(args) == 0
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


def test_a_model_without_weights_gets_no_gradient_equivalent_axis_and_one_line(
    store, tmp_path, capsys
):
    # issue 21: no figure against gradient equivalents without weights, one line, exit 0
    out = tmp_path / "figures"
    weights = tmp_path / "w.json"
    weights.write_text('{"resnet18": {"forward": 0.3, "hvp": 2.5}}')
    argv = ["--results", str(store), "--out", str(out), "--x", "grad_equiv"]
    assert curves_tool.main([*argv, "--cost-weights", str(weights)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no cost weights for model 'cnn'" in err
    assert "bench_optimizers.py --model cnn" in err
    assert not list(out.rglob("*grad_equiv*"))  # nothing drawn on an axis it cannot have
    # the store's own weights file (beside it): drawn, the weights under the title
    assert curves_tool.main([*argv, "--metrics", "test_acc"]) == 0
    fig_title = capsys.readouterr().out
    assert (out / EXPERIMENT / "cnn-test_acc-grad_equiv.png").exists(), fig_title


def test_the_title_states_the_weights_and_the_time_axis_the_machine(store):
    from drsom.analysis import costs
    from drsom.analysis.runs import select_runs

    selection = select_runs(store, EXPERIMENT)
    weights = costs.load_weights(costs.default_path(store))
    seen = {}

    def keep(fig, stem):
        seen[stem.name] = fig._suptitle.get_text()
        plt.close(fig)
        return []

    with unittest.mock.patch.object(figures, "save", keep):
        curves.plot_experiment(selection, store, "grad_equiv", ["test_acc"], None, weights)
        curves.plot_experiment(selection, store, "time", ["test_acc"], None)
    # wrapped to the figure's width: lines joined back with spaces
    title = seen["cnn-test_acc-grad_equiv"].replace("\n", " ")
    assert title.endswith(
        "lr ×0.1 after epoch 22 gradient equivalents = grad + 0.50 x extra forwards + 2.00 x "
        "HVPs (cnn, measured: batch 128, Test CPU (AVX2), 2 threads, 2026-01-02)"
    )
    # the synthetic summaries have no machine or load record
    assert seen["cnn-test_acc-time"].endswith(
        "\nwall clock: CPU; unknown whether shared (no load record)"
    )


@pytest.mark.parametrize(("preset", "width", "panels"), [("column", 3.3, 1), ("full", 6.75, 2)])
def test_presets_draw_at_the_papers_width(preset, width, panels):
    accs = [0.5, 0.8, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.982, 0.985]
    runs = [synthetic_run("drsom", s, accs) for s in range(2)]
    fig = figures.curve_figure(metrics_frame(runs), "test_acc", "epoch", "a\nb", preset=preset)
    assert fig.get_figwidth() == pytest.approx(width) and len(fig.axes) == panels
    assert fig.legends[0].get_texts()[0].get_fontsize() == pytest.approx(
        {"column": 7.0, "full": 8.0}[preset]
    )
    plt.close(fig)
    assert curves_tool.parse_args(["--preset", preset], Path(".")).preset == preset


def test_curves_check_only_what_they_draw(store, tmp_path, capsys):
    """A broken trial of a tuning study they do not draw, and a targets file they never read,
    stop nothing; named, the tuning study's broken trial is refused as any broken run is."""
    runs = merged_store(tmp_path, store)
    (cfg,) = compose_configs(["experiment=tune_digits_cnn", "optimizer=adam", "seed=0"])
    trial = write_run(runs, cfg, metric_rows("adam", 0, [0.5, 0.6]), "finished")
    trial.metrics.write_text(trial.metrics.read_text() + "3,garbage\n")  # no longer as sealed
    (runs.parent / "targets.json").write_text('{"x": 5}')  # not a targets file
    out = tmp_path / "figures"
    assert curves_tool.main(["--results", str(runs), "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "tune_digits_cnn: a tuning experiment, not drawn" in said.out
    assert f"broken run {trial.path}" in said.err and "repair or remove" not in said.err
    argv = ["--results", str(runs), "--out", str(out), "--experiment", "tune_digits_cnn"]
    assert curves_tool.main(argv) == 2
    assert trial.name in capsys.readouterr().err.splitlines()[-1]
