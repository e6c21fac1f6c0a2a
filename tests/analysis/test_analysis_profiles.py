"""Performance profiles (drsom.analysis.profiles) from hand-made runs: the plotted steps."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from analysis_store import synthetic_run

from drsom.analysis import figures, profiles
from drsom.analysis.costs import Weights
from drsom.analysis.runs import Selection
from drsom.analysis.tables import run_rows

WEIGHTS = {"resnet34": Weights(forward=0.5, hvp=2.0, where="test")}
MISS = [0.5, 0.6, 0.7, 0.8, 0.85]  # never reaches 90%


def _reach(epoch: int) -> list[float]:
    """Test accuracies that first reach 90% in ``epoch`` (of 5)."""
    return [0.5 if e < epoch else 0.91 for e in range(1, 6)]


def _experiment(name: str, reach: dict[str, int | None]) -> Selection:
    runs = []
    for label, epoch in reach.items():
        for seed in (0, 1):
            r = synthetic_run(label, seed, MISS if epoch is None else _reach(epoch))
            r.config["experiment"] = name
            runs.append(r)
    return Selection(name, runs, [], {})


def test_profile_steps_are_the_fractions_of_workloads_within_tau_of_the_best():
    # per epoch: DRSOM 11 + 0.5 * 11 + 2 * 22 = 60.5 gradient equivalents, the others 16.5
    a = _experiment("a", {"drsom": 2, "adam": 4, "sgd": None})  # 121, 66, never
    b = _experiment("b", {"drsom": 1, "adam": 4, "sgd": 5})  # 60.5, 66, 82.5
    rows = {s.experiment: run_rows(s, (0.9,), WEIGHTS) for s in (a, b)}
    costs, tuned = profiles.workload_costs(rows, 0.9)
    assert list(costs.index) == ["a: cifar10 / resnet34", "b: cifar10 / resnet34"]
    assert costs.loc["a: cifar10 / resnet34", "drsom"] == pytest.approx(121)
    assert costs.loc["b: cifar10 / resnet34", "sgd"] == pytest.approx(82.5)
    assert math.isinf(costs.loc["a: cifar10 / resnet34", "sgd"]) and tuned == []

    fig = profiles.profile_figure(costs, "t", figures.looks(a.runs + b.runs))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    # ratios: a: DRSOM 121/66, Adam 1, SGD inf; b: DRSOM 1, Adam 66/60.5, SGD 82.5/60.5
    taus = [1, 66 / 60.5, 82.5 / 60.5, 121 / 66, 121 / 66 * profiles.TAU_MARGIN]
    for line in lines.values():
        np.testing.assert_allclose(line.get_xdata(), taus)
        assert line.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(lines["DRSOM"].get_ydata(), [0.5, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(lines["Adam"].get_ydata(), [0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(lines["SGD"].get_ydata(), [0, 0, 0.5, 0.5, 0.5])  # never on a
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_a_seed_short_of_the_target_and_a_missing_optimizer_are_never_within_tau():
    a = _experiment("a", {"drsom": 2, "adam": 3})
    a.runs[1].metrics["test_acc"] = 0.5  # DRSOM seed 1 never reaches 90%
    b = _experiment("b", {"drsom": 2})  # no Adam on b
    rows = {s.experiment: run_rows(s, (0.9,), WEIGHTS) for s in (a, b)}
    costs, _ = profiles.workload_costs(rows, 0.9)
    assert math.isinf(costs.loc["a: cifar10 / resnet34", "drsom"])
    assert math.isnan(costs.loc["b: cifar10 / resnet34", "adam"])
    steps = profiles.profile_steps(costs)
    assert steps["adam"].tolist() == [0.5, 0.5] and steps["drsom"].tolist() == [0.5, 0.5]
    fig = profiles.profile_figure(costs, "t")
    assert {li.get_label() for li in fig.axes[0].get_lines()} == {"drsom", "adam (ran 1 of 2)"}
    plt.close(fig)
