"""Tables (drsom.analysis.tables) from a store with known values: means, stds, time to target."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from analysis_store import EXPERIMENT, metric_rows

from drsom.analysis.costs import Weights, default_path, load_weights
from drsom.analysis.runs import (
    select_runs,
)
from drsom.analysis.tables import (
    decay_jitter,
    experiment_table,
    markdown,
    run_rows,
    time_to_target,
)


@pytest.fixture(scope="module")
def selection(store):
    return select_runs(store, EXPERIMENT)


@pytest.fixture(scope="module")
def table(selection, store) -> pd.DataFrame:
    weights = load_weights(default_path(store))
    return experiment_table(run_rows(selection, weights=weights)).set_index("optimizer")


def test_table_has_the_known_means_stds_and_counts(table):
    drsom = table.loc["drsom"]
    assert (drsom["seeds"], drsom["diverged"], drsom["unfinished"], drsom["missing"]) == (
        3,
        0,
        0,
        0,
    )
    assert drsom["final_test_acc_mean"] == pytest.approx(0.96)
    assert drsom["final_test_acc_std"] == pytest.approx(0.01)  # sample std of .95 .96 .97
    # validation selects epoch 4 (analysis_store.metric_rows): test 0.94, 0.93, 0.95 there
    assert drsom["selected_test_acc_mean"] == pytest.approx(0.94)
    assert drsom["final_val_acc_mean"] == pytest.approx(0.91)
    assert drsom["final_train_acc_mean"] == pytest.approx(0.98)  # train_eval_acc, not train_acc

    adam = table.loc["adam"]
    assert (adam["seeds"], adam["diverged"], adam["unfinished"], adam["missing"]) == (2, 1, 0, 0)
    assert adam["final_test_acc_mean"] == pytest.approx(0.93)
    assert adam["final_test_acc_std"] == pytest.approx(0.01 * math.sqrt(2))

    adabelief = table.loc["adabelief"]
    assert (adabelief["seeds"], adabelief["unfinished"], adabelief["missing"]) == (1, 1, 1)
    assert adabelief["final_test_acc_mean"] == pytest.approx(0.93)
    assert math.isnan(adabelief["final_test_acc_std"])  # one seed: no spread to report
    assert table["runs"].tolist() == [3, 3, 3, 3]


def test_time_to_target_in_epochs_seconds_and_gradient_evaluations(table):
    drsom = table.loc["drsom"]
    # 90% first at epochs 2 (seed 0), 3, 3; seconds 10 e + seed; 11 grads + 22 HVPs per epoch
    assert drsom["reached_90"] == 3
    assert drsom["epochs_to_90_mean"] == pytest.approx(8 / 3)
    assert drsom["epochs_to_90_std"] == pytest.approx(np.std([2, 3, 3], ddof=1))
    assert drsom["seconds_to_90_mean"] == pytest.approx((20 + 31 + 32) / 3)
    # 60.5 gradient equivalents an epoch (analysis_store): 121, 181.5, 181.5
    assert drsom["grad_equiv_to_90_mean"] == pytest.approx((121 + 181.5 + 181.5) / 3)
    assert drsom["grad_equiv_to_90_std"] == pytest.approx(np.std([121, 181.5, 181.5], ddof=1))
    assert drsom["forward_to_90_mean"] == pytest.approx((44 + 66 + 66) / 3)
    assert drsom["grad_to_90_mean"] == pytest.approx((22 + 33 + 33) / 3)
    assert drsom["hvp_to_90_mean"] == pytest.approx((44 + 66 + 66) / 3)
    assert drsom["epochs_to_93_mean"] == pytest.approx((4 + 4 + 4) / 3)
    adam = table.loc["adam"]  # 93% only by seed 1, in epoch 5; the diverged seed is not a seed
    assert (adam["reached_93"], adam["epochs_to_93_mean"]) == (1, 5)
    # 110 forwards, 55 of them the gradients', no HVPs: 55 + 0.5 * 55
    assert adam["grad_equiv_to_93_mean"] == 82.5 and adam["forward_to_93_mean"] == 110
    assert table.loc["sgd", "reached_90"] == 0 and math.isnan(table.loc["sgd", "epochs_to_90_mean"])


def test_time_to_target_takes_the_first_epoch_at_or_above_it():
    m = pd.DataFrame(metric_rows("adam", 0, [0.5, 0.93, 0.80, 0.95]))
    hit = time_to_target(m, 0.93, Weights(forward=0.5, hvp=2.0, where="test"))
    # 44 forwards, 22 of them the gradients': 22 + 0.5 * 22
    assert hit == {"epochs": 2.0, "seconds": 20.0, "grad_equiv": 33.0} | {
        "forward": 44.0,
        "grad": 22.0,
        "hvp": 0.0,
    }
    assert math.isnan(time_to_target(m, 0.99)["epochs"])
    assert math.isnan(time_to_target(m, 0.93)["grad_equiv"])  # no weights: no equivalents


def test_gradient_equivalents_count_forwards_beyond_the_gradients_and_hvps():
    # DRSOM-interp's 8 epochs on digits: 441 forwards for 88 gradients (353 without one)
    w = Weights(forward=0.49, hvp=2.99, where="test")
    assert w.cost(forward=441, grad=88, hvp=0) == pytest.approx(88 + 0.49 * 353)
    assert w.cost(forward=177, grad=88, hvp=175) == pytest.approx(88 + 0.49 * 89 + 2.99 * 175)
    assert w.cost(forward=330, grad=330, hvp=0) == 330  # Adam: a gradient a step


def test_markdown_shows_percent_mean_std_and_partial_counts(table):
    text = markdown(table.reset_index(), (0.90, 0.93), EXPERIMENT, "notes")
    # models and optimizers as their configs' `display` names them
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| CNN")}
    assert "| 3/3 | 0 | 0 | 0 | 96.00 ± 1.00 |" in lines["DRSOM"]
    assert "| 2/3 | 1 | 0 | 0 | 93.00 ± 1.41 |" in lines["Adam"]
    assert "5.0 (1/2)" in lines["Adam"]  # epochs to 93%: one of the two finished seeds
    assert "| 1/3 | 0 | 1 | 1 | 93.00 |" in lines["AdaBelief"]
    assert "not reached (0/3)" in lines["SGD"]


def test_decay_jitter_is_the_mean_change_after_the_last_decay():
    m = pd.DataFrame({"epoch": [1, 2, 3, 4, 5, 6], "test_acc": [0.5, 0.8, 0.7, 0.9, 0.92, 0.91]})
    step = {"lr_schedule": "step", "epochs": 6}
    # after epoch 3: 0.9 -> 0.92 -> 0.91, changes 0.02 and 0.01 (the drop before is not counted)
    assert decay_jitter(m, step | {"lr_milestones": [3]}) == pytest.approx(0.015)
    assert decay_jitter(m, step | {"lr_milestones": [0.5]}) == pytest.approx(0.015)  # 3 of 6
    assert decay_jitter(m, step | {"lr_milestones": [2, 4]}) == pytest.approx(0.01)  # the last
    assert math.isnan(decay_jitter(m, step | {"lr_milestones": [5]}))  # one epoch after it
    assert math.isnan(decay_jitter(m, {"lr_schedule": "constant", "epochs": 6}))
