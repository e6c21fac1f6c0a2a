"""Results tables with confidence intervals, from ``tables.run_rows`` (one row per run).

``interval_table``: per variant, the mean and the confidence interval (``stats.interval``,
Student-t by default) of every accuracy and cost-to-target column over its *finished* seeds; a
cost counts the finished seeds that reached the target (``<column>_n``), as ``experiment_table``
does. ``paired_table``: every variant against the baseline of its dataset and model, the
difference of a metric paired by seed (``stats.paired_difference``). Accuracies stay fractions.
"""

from __future__ import annotations

import re

import pandas as pd

from drsom.analysis.stats import interval, paired_difference
from drsom.store.state import Status

ACCURACIES = ("final_test_acc", "selected_test_acc", "final_val_acc", "final_train_acc")
# the costs run_rows writes (tables.COSTS): epochs, seconds, gradient equivalents, raw counts
COST_COLUMN = re.compile(r"^(epochs|seconds|grad_equiv|forward|grad|hvp)_to_")


def interval_table(
    rows: pd.DataFrame, level: float = 0.95, method: str = "t", seed: int = 0
) -> pd.DataFrame:
    """One row per variant (in the rows' order): ``runs``, ``seeds`` (finished), and for each
    accuracy and cost column ``c`` of ``rows``: ``c_mean``, ``c_low``, ``c_high``, ``c_n``."""
    rows = _with_variant(rows)
    columns = [c for c in ACCURACIES if c in rows] + [c for c in rows if COST_COLUMN.match(c)]
    out = []
    for variant, cell in rows.groupby("variant", sort=False):
        done = cell[cell["status"] == Status.FINISHED]
        row = _who(cell.iloc[0]) | {"variant": variant, "runs": len(cell), "seeds": len(done)}
        for c in columns:
            mean, low, high, n = interval(done[c], level, method, seed)
            row |= {f"{c}_mean": mean, f"{c}_low": low, f"{c}_high": high, f"{c}_n": n}
        out.append(row)
    return pd.DataFrame(out)


def paired_table(
    rows: pd.DataFrame,
    baseline: str,
    metric: str = "final_test_acc",
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
) -> pd.DataFrame:
    """Per (dataset, model), every other variant minus the baseline: ``diff_mean``,
    ``diff_low``, ``diff_high`` of ``metric`` over the finished seeds both have (``paired``;
    ``unpaired``: finished seeds only one side has). ``baseline`` names a variant or an optimizer
    label; a dataset and model without it gets no rows, one where it names several variants is
    refused (name the variant)."""
    rows = _with_variant(rows)
    if metric not in rows:
        raise ValueError(f"metric={metric!r}: not a column of the run rows")
    chosen = (rows["variant"] == baseline) | (rows["optimizer"] == baseline)
    if not chosen.any():
        have = sorted(set(rows["optimizer"]))
        raise ValueError(f"baseline={baseline!r}: no variant or optimizer of that name ({have})")
    done = rows[rows["status"] == Status.FINISHED]
    out = []
    for (data, model), group in rows.groupby(["data", "model"], sort=False):
        base = group.loc[chosen[group.index], "variant"].unique()
        if len(base) > 1:
            raise ValueError(
                f"baseline={baseline!r} is {len(base)} variants on {data}/{model}: "
                f"{', '.join(base)}; name one of them"
            )
        if len(base) == 0:
            continue
        b = _metric_by_seed(done, base[0], metric)
        for variant, cell in group.groupby("variant", sort=False):
            if variant == base[0]:
                continue
            d = paired_difference(_metric_by_seed(done, variant, metric), b, level, method, seed)
            row = _who(cell.iloc[0]) | {"variant": variant, "baseline": base[0], "metric": metric}
            row |= {"diff_mean": d.mean, "diff_low": d.low, "diff_high": d.high}
            out.append(row | {"paired": d.n, "unpaired": d.unpaired})
    return pd.DataFrame(out)


def _metric_by_seed(done: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    cell = done[done["variant"] == variant]
    return pd.Series(cell[metric].to_numpy(dtype=float), index=cell["seed"].to_numpy())


def _with_variant(rows: pd.DataFrame) -> pd.DataFrame:
    # rows made by hand, as experiment_table takes them: one variant per model and label
    if "variant" in rows:
        return rows
    return rows.assign(variant=rows["model"] + "-" + rows["optimizer"], setting="")


def _who(first: pd.Series) -> dict:
    return {
        "data": first["data"],
        "model": first["model"],
        "optimizer": first["optimizer"],
        "display": first.get("display") or first["optimizer"],
        "model_display": first.get("model_display") or first["model"],
        "setting": first.get("setting") or "",
    }
