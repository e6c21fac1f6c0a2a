"""Confidence intervals, paired differences, performance profiles, ``--targets``; the interval
and paired tables from run rows (``drsom.analysis.stats``, ``interval_tables``).

Expected numbers are computed by hand here, never by the code under test: t quantiles in closed
form for 1 and 2 degrees of freedom (12.706205, 4.302653; 2.919986 at 90%), 3.182446 for 3.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from drsom.analysis.interval_tables import interval_table, paired_table
from drsom.analysis.stats import (
    check_targets,
    interval,
    paired_difference,
    performance_profile,
    performance_ratios,
)
from drsom.analysis.tables import experiment_table


def _t2(p: float) -> float:
    """The t quantile with 2 degrees of freedom in closed form: (2p - 1) / sqrt(2p(1 - p))."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


T975_1 = math.tan(math.pi * (0.975 - 0.5))  # 1 degree of freedom: the Cauchy quantile
T975_2, T95_2 = _t2(0.975), _t2(0.95)
T975_3 = 3.182446305284  # from a t table


# -------------------------------------------------------------------------------- interval
def test_t_interval_of_one_two_three_is_the_hand_computation():
    mean, low, high, n = interval([1.0, 2.0, 3.0])  # s = 1
    half = T975_2 / math.sqrt(3)  # 2.4841
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2 - half, abs=1e-9) and high == pytest.approx(2 + half, abs=1e-9)
    ninety = interval([1.0, 2.0, 3.0], level=0.90)
    assert ninety.high - ninety.mean == pytest.approx(T95_2 / math.sqrt(3), abs=1e-9)


def test_t_interval_of_four_values_uses_three_degrees_of_freedom():
    # [0.95, 0.96, 0.97, 0.99]: mean 0.9675, s = 0.017078
    x = [0.95, 0.96, 0.97, 0.99]
    s = math.sqrt(sum((v - 0.9675) ** 2 for v in x) / 3)
    got = interval(x)
    assert got.high - got.mean == pytest.approx(T975_3 * s / 2, abs=1e-12)  # 0.027175


def test_not_measured_and_not_reached_values_are_left_out_and_counted():
    assert interval([1.0, math.nan, 2.0, math.inf, 3.0]) == interval([1.0, 2.0, 3.0])
    one = interval([0.9, math.nan])
    assert one.mean == 0.9 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    assert interval([]).n == 0 and math.isnan(interval([]).mean)


def test_bootstrap_is_reproducible_for_a_seed_and_degenerate_for_three_values():
    x = [1.0, 2.0, 3.0]
    a = interval(x, method="bootstrap", seed=7)
    assert a == interval(x, method="bootstrap", seed=7)
    # resample means of {1,2,3}: P(mean = 1) = P(mean = 3) = 1/27 > 2.5%, so the 95% interval is
    # exactly the range of the data, [1, 3], where t gives [-0.48, 4.48]
    assert (a.low, a.high) == (1.0, 3.0)


def test_bootstrap_of_many_values_covers_the_mean_and_agrees_with_t():
    x = np.random.default_rng(3).normal(10.0, 2.0, size=200)
    boot = interval(x, method="bootstrap", seed=1)
    t = interval(x)
    assert boot.low < boot.mean < boot.high
    assert boot.mean == pytest.approx(x.mean())
    assert boot != interval(x, method="bootstrap", seed=2)  # the seed draws the resamples
    # both half-widths ~ 1.96 * 2 / sqrt(200) = 0.277; the bootstrap within 10% of the t one
    assert (boot.high - boot.low) == pytest.approx(t.high - t.low, rel=0.10)
    assert (t.high - t.low) / 2 == pytest.approx(0.277, rel=0.15)


@pytest.mark.parametrize("kwargs", [{"level": 1.0}, {"level": 95}, {"method": "bca"}])
def test_a_wrong_level_or_method_is_refused(kwargs):
    with pytest.raises(ValueError, match="level|method"):
        interval([1.0, 2.0], **kwargs)


# ------------------------------------------------------------------------------ paired
def test_paired_difference_is_the_mean_of_per_seed_differences_over_shared_seeds():
    a = {0: 0.95, 1: 0.96, 2: 0.97, 3: 0.99}  # seed 3: only a
    b = {0: 0.92, 1: 0.94, 2: 0.93, 5: 0.50}  # seed 5: only b
    d = paired_difference(a, b)
    # differences 0.03, 0.02, 0.04: mean 0.03, s = 0.01 (unpaired means would differ by 0.145)
    assert d.mean == pytest.approx(0.03, abs=1e-12)
    assert d.high - d.mean == pytest.approx(T975_2 * 0.01 / math.sqrt(3), abs=1e-12)
    assert (d.n, d.unpaired) == (3, 2)
    same = paired_difference(pd.Series(a), pd.Series(b))
    assert same == pytest.approx(d)


def test_a_seed_without_a_value_on_one_side_is_unpaired():
    d = paired_difference({0: 1.0, 1: 2.0, 2: math.nan}, {0: 0.5, 1: 1.0, 2: 0.7})
    assert (d.mean, d.n, d.unpaired) == (0.75, 2, 1)


def test_repeated_seeds_are_refused():
    with pytest.raises(ValueError, match="a_by_seed: seeds \\[0\\] repeat"):
        paired_difference(pd.Series([1.0, 2.0], index=[0, 0]), {0: 1.0})


# ------------------------------------------------------------------ performance profiles
COSTS = pd.DataFrame(
    {
        "A": [10.0, 5.0, math.nan, math.nan],
        "B": [10.0, 15.0, 8.0, math.nan],
        "C": [20.0, math.inf, 4.0, math.nan],
    },
    index=["w1", "w2", "w3", "w4"],  # w1: A and B tie; w4: nobody reached the target
)


def test_performance_ratios_divide_by_the_best_and_not_reached_is_inf():
    r = performance_ratios(COSTS)
    assert r.loc["w1"].tolist() == [1.0, 1.0, 2.0]
    assert r.loc["w2"].tolist() == [1.0, 3.0, math.inf]
    assert r.loc["w3"].tolist() == [math.inf, 2.0, 1.0]
    assert r.loc["w4"].tolist() == [math.inf] * 3


def test_performance_profile_counts_workloads_within_tau_of_the_best():
    p = performance_profile(COSTS, [1.0, 1.5, 2.0, 3.0, 100.0])
    # A: ratios 1, 1, inf, inf; B: 1, 3, 2, inf; C: 2, inf, 1, inf (the bound is within)
    assert p["A"].tolist() == [0.5, 0.5, 0.5, 0.5, 0.5]
    assert p["B"].tolist() == [0.25, 0.25, 0.5, 0.75, 0.75]
    assert p["C"].tolist() == [0.25, 0.25, 0.5, 0.5, 0.5]
    assert p.index.tolist() == [1.0, 1.5, 2.0, 3.0, 100.0]


def test_performance_profile_refuses_tau_below_one_and_non_positive_costs():
    with pytest.raises(ValueError, match="taus"):
        performance_profile(COSTS, [0.5, 1.0])
    with pytest.raises(ValueError, match="positive"):
        performance_profile(pd.DataFrame({"A": [0.0], "B": [1.0]}), [1.0])


# ------------------------------------------------------------------------------ targets
def test_targets_are_fractions_or_percent_and_come_back_as_fractions():
    assert check_targets([93, 0.95, "97.5", 1.5]) == (0.93, 0.95, 0.975, 0.015)


@pytest.mark.parametrize("bad", [0, -5, 1, 100, 150, math.nan, math.inf, "ninety"])
def test_a_target_outside_the_range_is_one_line_naming_the_flag(bad):
    with pytest.raises(ValueError) as err:
        check_targets([93, bad])
    text = str(err.value)
    assert text.startswith(f"--targets: {bad!r}") and "\n" not in text
    assert "(1, 100)" in text and "(0, 1)" in text


# ------------------------------------------------------------------ tables from run rows
def _rows() -> pd.DataFrame:
    """drsom: seeds 0-2 finished (0.95, 0.96, 0.97), reaching 90% at epochs 2, 3, never;
    sgd: seeds 0, 1 finished (0.92, 0.94), seed 2 diverged, seed 3 finished (0.90)."""
    acc = {"drsom": [0.95, 0.96, 0.97], "sgd": [0.92, 0.94, math.nan, 0.90]}
    status = {"drsom": ["finished"] * 3, "sgd": ["finished", "finished", "diverged", "finished"]}
    epochs = {"drsom": [2.0, 3.0, math.nan], "sgd": [math.nan] * 4}
    rows = []
    for opt in ("drsom", "sgd"):
        for seed, a in enumerate(acc[opt]):
            rows.append(
                {"data": "digits", "model": "cnn", "optimizer": opt, "display": opt.upper()}
                | {"setting": "", "variant": f"digits-cnn-{opt}", "seed": seed}
                | {"status": status[opt][seed], "final_test_acc": a, "best_test_acc": a}
                | {"final_train_acc": a, "epochs_to_90": epochs[opt][seed]}
                | {"seconds_to_90": 10 * epochs[opt][seed]}
            )
    return pd.DataFrame(rows)


def test_interval_table_has_mean_and_t_interval_over_finished_seeds():
    table = interval_table(_rows()).set_index("optimizer")
    drsom, sgd = table.loc["drsom"], table.loc["sgd"]
    assert drsom["final_test_acc_mean"] == pytest.approx(0.96)
    half = T975_2 * 0.01 / math.sqrt(3)
    assert drsom["final_test_acc_high"] == pytest.approx(0.96 + half)
    assert drsom["final_test_acc_low"] == pytest.approx(0.96 - half)
    # sgd: the diverged seed is left out: 0.92, 0.94, 0.90, s = 0.02
    assert (sgd["runs"], sgd["seeds"], sgd["final_test_acc_n"]) == (4, 3, 3)
    assert sgd["final_test_acc_high"] - 0.92 == pytest.approx(T975_2 * 0.02 / math.sqrt(3))
    # cost to 90%: over the 2 seeds that reached it (epochs 2, 3: s = 0.7071, t_{0.975,1})
    assert (drsom["epochs_to_90_mean"], drsom["epochs_to_90_n"]) == (2.5, 2)
    assert drsom["seconds_to_90_high"] == pytest.approx(25 + T975_1 * math.sqrt(50) / math.sqrt(2))
    assert sgd["epochs_to_90_n"] == 0 and math.isnan(sgd["epochs_to_90_mean"])


def test_interval_table_agrees_with_the_experiment_tables_mean_and_std():
    # the same finished seeds as experiment_table: half-width = t_{0.975,n-1} * std / sqrt(n)
    ours = interval_table(_rows()).set_index("optimizer")
    theirs = experiment_table(_rows(), targets=(0.90,)).set_index("optimizer")
    for opt in ("drsom", "sgd"):
        for c in ("final_test_acc", "epochs_to_90"):
            assert ours.loc[opt, f"{c}_mean"] == pytest.approx(
                theirs.loc[opt, f"{c}_mean"], nan_ok=True
            )
    std, n = theirs.loc["sgd", "final_test_acc_std"], ours.loc["sgd", "final_test_acc_n"]
    half = ours.loc["sgd", "final_test_acc_high"] - ours.loc["sgd", "final_test_acc_mean"]
    assert half == pytest.approx(T975_2 * std / math.sqrt(n))


def test_paired_table_pairs_finished_seeds_against_the_baseline():
    table = paired_table(_rows(), baseline="sgd")
    assert len(table) == 1
    row = table.iloc[0]
    # seeds 0, 1 pair (0.95-0.92, 0.96-0.94); drsom's 2 and sgd's 3 do not
    assert (row["variant"], row["baseline"]) == ("digits-cnn-drsom", "digits-cnn-sgd")
    assert row["diff_mean"] == pytest.approx(0.025)
    assert row["diff_high"] == pytest.approx(0.025 + T975_1 * (0.01 / math.sqrt(2)) / math.sqrt(2))
    assert (row["paired"], row["unpaired"]) == (2, 2)
    by_variant = paired_table(_rows(), baseline="digits-cnn-drsom").iloc[0]
    assert by_variant["diff_mean"] == pytest.approx(-0.025)


def test_an_unknown_or_ambiguous_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline='adam': no variant"):
        paired_table(_rows(), baseline="adam")
    rows = _rows()
    rows.loc[rows["seed"] == 3, "variant"] = "digits-cnn-sgd-lr0.1"
    with pytest.raises(ValueError, match="is 2 variants on digits/cnn"):
        paired_table(rows, baseline="sgd")
