"""Figures (drsom.analysis.figures) from runs with known values: lines, bands, axes, titles."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from analysis_store import EXPERIMENT, synthetic_run
from omegaconf import OmegaConf
from run_helpers import compose_config

from drsom.analysis import costs, curves, figures
from drsom.analysis.runs import (
    metrics_frame,
    select_runs,
)
from drsom.cfg.experiments import experiment_names

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def selection(store):
    return select_runs(store, EXPERIMENT)


def test_one_line_per_optimizer_with_the_fixed_colours_and_seed_counts(selection):
    frame = metrics_frame(selection.runs)
    fig = figures.curve_figure(
        frame,
        "test_acc",
        "epoch",
        "title",
        order=["drsom", "adam", "adabelief", "sgd"],
        legend_notes=curves.legend_notes(selection.runs),
        shown=figures.looks(selection.runs),
    )
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == [
        "DRSOM (3 seeds)",
        "Adam (3 seeds; 1 diverged)",
        "AdaBelief (2 seeds; 1 unfinished)",
        "SGD (3 seeds)",
    ]
    drsom = lines["DRSOM (3 seeds)"]
    # the colours the configs give (configs/optimizer/drsom.yaml, sgd.yaml); DRSOM on top
    assert drsom.get_color() == "#000000" and drsom.get_zorder() == 3
    assert lines["SGD (3 seeds)"].get_color() == "#1f77b4"
    np.testing.assert_allclose(drsom.get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(drsom.get_ydata(), [55, 88.333333, 91.333333, 94, 96], rtol=1e-6)
    # the diverged adam seed counts while it has epochs: mean of 3 runs, then of 2
    np.testing.assert_allclose(
        lines["Adam (3 seeds; 1 diverged)"].get_ydata(), [70, 80, 85, 90, 93]
    )
    assert len(ax.collections) == 4  # a band per optimizer
    plt.close(fig)


def test_band_is_std_from_three_seeds_and_min_max_below():
    agg = pd.DataFrame(
        {
            "mean": [0.5, 0.5, 0.5],
            "std": [0.1, 0.1, np.nan],
            "lo": [0.3, 0.4, 0.5],
            "hi": [0.7, 0.6, 0.5],
        }
        | {"n": [3, 2, 1]}
    )
    lower, upper = figures.band(agg)
    np.testing.assert_allclose(lower, [0.4, 0.4, 0.5])
    np.testing.assert_allclose(upper, [0.6, 0.6, 0.5])


def test_x_axis_time_and_gradient_equivalents_use_the_stores_cost_columns(selection, store):
    weights = costs.load_weights(costs.default_path(store))
    frame = metrics_frame(selection.runs, weights)
    # DRSOM's epoch: 11 + 0.5 (22 - 11) + 2 * 22 = 60.5 gradient equivalents (analysis_store)
    equiv = [60.5 * e for e in range(1, 6)]
    for x, expected in (
        ("time", [11, 21, 31, 41, 51]),
        ("grads_hvps", [33, 66, 99, 132, 165]),
        ("grad_equiv", equiv),
    ):
        shown = figures.looks(selection.runs)
        fig = figures.curve_figure(frame, "test_acc", x, "t", order=["drsom"], shown=shown)
        drsom = next(li for li in fig.axes[0].get_lines() if li.get_label().startswith("DRSOM"))
        np.testing.assert_allclose(drsom.get_xdata(), expected)  # mean over seeds 0, 1, 2
        plt.close(fig)


def test_accuracy_figures_magnify_the_second_half_in_a_panel_of_their_own():
    accs = [0.5, 0.8, 0.9, 0.95, 0.96, 0.97, 0.975, 0.98, 0.982, 0.985]
    runs = [synthetic_run("drsom", s, [a - 0.01 * s for a in accs]) for s in range(3)]
    runs.append(synthetic_run("sgd", 0, [0.3, 0.4]))  # diverged early: no second half
    runs.append(synthetic_run("adam", 0, [0.5] * 10))  # far below: named, not drawn
    fig = figures.curve_figure(
        metrics_frame(runs), "test_acc", "epoch", "t", shown=figures.looks(runs)
    )
    main, zoom = fig.axes
    assert len(main.get_lines()) == 3 and len(zoom.get_lines()) == 1
    assert [text.get_text() for text in zoom.texts] == ["below the frame: Adam"]
    assert zoom.get_xlim() == (5, 10)
    low, high = zoom.get_ylim()  # the band of epochs 5-10 (95.0 - 1 to 98.5), padded a little
    assert 93.5 < low < 94.0 and 98.5 < high < 99.0
    plt.close(fig)
    loss = figures.curve_figure(metrics_frame(runs), "train_loss", "epoch", "t")
    assert len(loss.axes) == 1 and loss.axes[0].get_yscale() == "log"
    plt.close(loss)


def test_protocol_title_states_data_model_seeds_device_and_schedule():
    facts = {
        "data": "digits",
        "model": "cnn",
        "data_display": "digits (sklearn)",
        "model_display": "CNN",
        "train_images": 1347,
        "epochs": 30,
        "batch_size": 128,
        "schedule": "lr ×0.1 after epoch 22",
        "device": "cpu",
    }
    assert figures.protocol_title(facts, 3) == (
        "digits (sklearn), 1,347 train images, CNN, 3 seeds, CPU\n"
        "30 epochs, batch 128, lr ×0.1 after epoch 22"
    )


def test_colours_come_from_the_configs_and_differ_within_every_experiment():
    for name in experiment_names():
        experiment = OmegaConf.load(REPO / "experiments" / f"{name}.yaml")
        params = OmegaConf.select(experiment, "hydra.sweeper.params")
        if params is None:  # a tuning experiment (one optimizer per launch), or a single run
            continue
        # a tuned experiment names drsom-select's configs, <tuning experiment>/<label>, which
        # start from the optimizer's own; configs/optimizer/ablation/<label> are configs too
        named = [c.strip() for c in str(params.optimizer).split(",")]
        labels = [
            c if (REPO / "configs" / "optimizer" / f"{c}.yaml").exists() else c.split("/")[-1]
            for c in named
        ]
        # optimizer/variant/ configs start from drsom-select's: they need results/selected
        selected = f"hydra.searchpath=[file://{REPO / 'results' / 'selected'}]"
        colours = {
            compose_config(f"optimizer={lbl}", selected)["optimizer"]["color"] for lbl in labels
        }
        assert len(colours) == len(labels), name
    # a config without one: a colour fixed by its label, the same in every figure
    assert figures.color("my_new_optimizer") == figures.color("my_new_optimizer")
    assert figures.color("my_new_optimizer") != figures.color("my_other_optimizer")
