"""An experiment's results table: accuracy over seeds and the cost to reach target accuracies.

Statistics are over the *finished* runs of a cell (mean and sample std, ddof=1); every other run
the grid asks for is counted in its own column (``diverged``, ``unfinished``: running, interrupted
or failed, ``missing``: never started), so a cell built on 2 of 3 seeds says so.

Time to target: the first epoch whose test accuracy reaches the target, with the training seconds
(evaluation excluded), the gradient equivalents (``drsom.analysis.costs``: forwards, gradients
and HVPs weighted by their measured times) and the raw counts of forwards, gradients and HVPs
spent up to the end of that epoch; a mean over the finished runs that reached it, with how many
did (``reached``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from drsom.analysis.costs import RAW, Weights
from drsom.analysis.figures import looks, name
from drsom.analysis.runs import Run, Selection, variant_suffixes
from drsom.cfg.schedules import milestone_epochs
from drsom.store.identity import RunKey
from drsom.store.state import UNFINISHED, Status, selected

FINISHED, DIVERGED, MISSING = Status.FINISHED, Status.DIVERGED, Status.MISSING

DEFAULT_TARGETS = (0.90, 0.93)
# The accuracies a table reports, and how: the test set at the last epoch and at the epoch the
# validation split selects (never its maximum: choosing on the test set is not a result); the
# training set measured like the test set (train_eval_acc), not the running train-mode mean.
ACCURACIES = {
    "final_test_acc": "final test acc",
    "selected_test_acc": "test acc at val-best epoch",
    "final_val_acc": "final val acc",
    "final_train_acc": "final train acc",
    "decay_jitter": "test acc jitter after the decay",
}
# what "to reach the target" is measured in: epochs, training seconds, gradient equivalents, and
# the raw oracle counts behind the last (forwards include those of the gradients)
COSTS = ("epochs", "seconds", "grad_equiv", *RAW)


def target_name(target: float) -> str:
    """0.9 -> "90", 0.935 -> "93.5" (column names and headings)."""
    return f"{target * 100:g}"


def time_to_target(
    metrics: pd.DataFrame, target: float, weights: Weights | None = None
) -> dict[str, float]:
    """Epoch, training seconds, gradient equivalents (NaN without ``weights``) and the forwards,
    gradients and HVPs counted when test_acc first >= target."""
    hit = metrics[metrics["test_acc"] >= target]
    if hit.empty:
        return dict.fromkeys(COSTS, math.nan)
    row = hit.iloc[0]
    raw = {c: float(row[c]) if c in row and not pd.isna(row[c]) else 0.0 for c in RAW}
    return {
        "epochs": float(row["epoch"]),
        "seconds": float(row["train_seconds"]),
        "grad_equiv": weights.cost(**raw) if weights is not None else math.nan,
        **raw,
    }


def run_rows(
    selection: Selection,
    targets: Sequence[float] = DEFAULT_TARGETS,
    weights: dict[str, Weights] | None = None,
) -> pd.DataFrame:
    """One row per run of the grid (missing ones too): status, accuracies, time to each target
    (in gradient equivalents with the ``weights`` of the run's model, ``costs.weights_for``)."""
    suffix = variant_suffixes(selection.runs)
    weights = weights or {}
    rows = [
        _run_row(r, targets, suffix[r.variant], weights.get(r.key()[2])) for r in selection.runs
    ]
    # how the configs name the optimizers and models (a missing run: as its stored siblings)
    shown = looks(selection.runs)
    models = {r.key()[2]: r.config["model"].get("display") for r in selection.runs}
    datasets = {r.key()[1]: r.config["data"].get("display") for r in selection.runs}
    for row in rows:
        row["display"] = name(row["optimizer"], shown)
    for _, rid in selection.missing:
        key = RunKey.parse(rid)
        data, model, optimizer, seed, variant = (
            key.data,
            key.model,
            key.label,
            key.seed,
            key.variant,
        )
        rows.append(
            {"run_id": rid, "data": data, "model": model, "optimizer": optimizer}
            | {"setting": suffix.get(variant, ""), "variant": variant, "seed": seed}
            | {"status": MISSING, "display": name(optimizer, shown)}
        )
    for row in rows:
        row["model_display"] = models.get(row["model"]) or row["model"]
        row["data_display"] = datasets.get(row["data"]) or row["data"]
    return pd.DataFrame(rows)


def _run_row(run: Run, targets: Sequence[float], setting: str, weights: Weights | None) -> dict:
    _, data, model, optimizer, seed = run.key()
    m = run.metrics.sort_values("epoch") if len(run.metrics) else run.metrics
    evaluated = m.dropna(subset=["test_acc"]) if len(m) else m
    row = {"run_id": run.run_id, "data": data, "model": model, "optimizer": optimizer}
    row |= {"setting": setting, "variant": run.variant, "seed": seed}
    row |= {"status": run.status, "epochs_done": int(m["epoch"].max()) if len(m) else 0}
    if len(evaluated):
        last = evaluated.iloc[-1]
        row["final_test_acc"] = float(last["test_acc"])
        row["final_val_acc"] = float(last.get("val_acc", math.nan))
        row["final_train_acc"] = float(last.get("train_eval_acc", math.nan))
        chosen = selected(evaluated.to_dict("records"))
        row["selected_epoch"] = chosen["epoch"] if chosen else math.nan
        row["selected_test_acc"] = chosen["test_acc"] if chosen else math.nan
        row["decay_jitter"] = decay_jitter(evaluated, run.config.get("trainer", {}))
        for t in targets:
            for cost, value in time_to_target(evaluated, t, weights).items():
                row[f"{cost}_to_{target_name(t)}"] = value
    return row


def decay_jitter(evaluated: pd.DataFrame, trainer: dict) -> float:
    """Mean |test_acc(e) - test_acc(e')| over consecutive evaluated epochs after the last decay
    of a step schedule; NaN for other schedules or fewer than two such epochs."""
    if trainer.get("lr_schedule") != "step":
        return math.nan
    try:
        last = max(milestone_epochs(trainer["lr_milestones"], int(trainer["epochs"])))
    except (KeyError, TypeError, ValueError):
        return math.nan
    after = evaluated.loc[evaluated["epoch"] > last, "test_acc"].to_numpy(dtype=float)
    return float(np.abs(np.diff(after)).mean()) if len(after) > 1 else math.nan


def experiment_table(
    rows: pd.DataFrame, targets: Sequence[float] = DEFAULT_TARGETS
) -> pd.DataFrame:
    """One row per variant (dataset, model, optimizer and settings), in the order the runs come
    (the grid's): different configs are never pooled, only the seeds of one."""
    out = []
    if "variant" not in rows:  # rows made by hand: one variant per optimizer label
        rows = rows.assign(variant=rows["model"] + "-" + rows["optimizer"], setting="")
    for variant, cell in rows.groupby("variant", sort=False):
        status = cell["status"]
        done = cell[status == FINISHED]
        first = cell.iloc[0]
        row = {"data": first["data"], "model": first["model"], "optimizer": first["optimizer"]}
        # rows made by hand may not say how to show them: then by label and name
        row["display"] = first.get("display") or first["optimizer"]
        row["model_display"] = first.get("model_display") or first["model"]
        row["data_display"] = first.get("data_display") or first["data"]
        row |= {"setting": first["setting"], "variant": variant}
        row |= {"runs": len(cell), "seeds": len(done)}
        row |= {
            "diverged": int((status == DIVERGED).sum()),
            "unfinished": int(status.isin(UNFINISHED).sum()),
            "missing": int((status == MISSING).sum()),
        }
        for metric in ACCURACIES:
            row |= _mean_std(done, metric)
        for t in targets:
            name = target_name(t)
            column = f"epochs_to_{name}"
            reached = done[column].notna() if column in done else pd.Series(False, done.index)
            row[f"reached_{name}"] = int(reached.sum())
            for cost in COSTS:
                row |= _mean_std(done[reached], f"{cost}_to_{name}")
        out.append(row)
    return pd.DataFrame(out)


def _mean_std(frame: pd.DataFrame, column: str) -> dict[str, float]:
    values = frame[column].dropna() if column in frame else pd.Series(dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return {f"{column}_mean": mean, f"{column}_std": std}


# ------------------------------------------------------------------------------- Markdown
def markdown(
    table: pd.DataFrame,
    targets: Sequence[float],
    heading: str,
    notes: str,
    grad_equiv: bool = True,
) -> str:
    """The table for a reader: percent accuracies, "mean ± std", "(reached/seeds)" per target.

    ``grad_equiv=False`` (a model without cost weights): no gradient-equivalent column; the
    notes say why."""
    shown_costs = COSTS[:3] if grad_equiv else COSTS[:2]
    several = table["data"].nunique() > 1 if "data" in table else False  # then a data column
    header = [*(["data"] if several else []), "model", "optimizer", "seeds"]
    header += ["diverged", "unfinished", "missing"]
    header += [f"{shown} (%)" for shown in ACCURACIES.values()]
    for t in targets:
        goal = target_name(t)
        header += [f"epochs to {goal}%", f"train s to {goal}%"]
        header += [f"grad-equiv to {goal}%"] if grad_equiv else []
        header += [f"forwards / grads / HVPs at {goal}%"]
    lines = [f"## {heading}", "", notes, "", _row(header), _row(["---"] * len(header))]
    for _, r in table.iterrows():
        who = r.get("display") or r["optimizer"]
        shown = f"{who} {r['setting']}" if r["setting"] else who
        cells = [r.get("data_display") or r["data"]] if several else []
        cells += [r.get("model_display") or r["model"], shown, f"{r['seeds']}/{r['runs']}"]
        cells += [str(r[c]) for c in ("diverged", "unfinished", "missing")]
        for metric in ACCURACIES:
            cells.append(_pm(r[f"{metric}_mean"], r[f"{metric}_std"], 100, "{:.2f}"))
        for t in targets:
            name = target_name(t)
            reached = r[f"reached_{name}"]
            formats = ("{:.1f}", "{:,.0f}", "{:,.0f}")[: len(shown_costs)]
            for cost, fmt in zip(shown_costs, formats, strict=True):
                mean, std = r[f"{cost}_to_{name}_mean"], r[f"{cost}_to_{name}_std"]
                if reached == 0:  # said once, in the epochs column
                    said = cost == "epochs" and r["seeds"]
                    cells.append(f"not reached (0/{r['seeds']})" if said else "–")
                    continue
                text = _pm(mean, std, 1, fmt)
                cells.append(text if reached == r["seeds"] else f"{text} ({reached}/{r['seeds']})")
            # the counts behind the gradient equivalents: means over the same seeds
            raw = [_pm(r[f"{c}_to_{name}_mean"], math.nan, 1, "{:,.0f}") for c in RAW]
            cells.append(" / ".join(raw) if reached else "–")
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float, scale: float, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    text = fmt.format(mean * scale)
    return text if std is None or np.isnan(std) else f"{text} ± {fmt.format(std * scale)}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# --------------------------------------------------------------------- confidence intervals
CI_NOTE = (
    "95% confidence intervals over the finished seeds: Student-t (mean ± t(0.975, n-1) s/sqrt(n);"
    " with 3-5 seeds a bootstrap of the seeds is degenerate); none with one seed. A cost's n is "
    "the seeds that reached the target."
)


# the cost columns of the intervals table, with their headers
INTERVAL_COSTS = (
    ("epochs", "epochs"),
    ("grad_equiv", "grad-equiv"),
    ("forward", "forwards"),
    ("grad", "gradients"),
    ("hvp", "HVPs"),
)


def interval_markdown(
    ci: pd.DataFrame,
    paired: pd.DataFrame | None,
    targets,
    baseline: str | None = None,
    grad_equiv: bool = True,
) -> str:
    """The intervals table (``interval_tables.interval_table``) and the paired comparison against
    ``baseline`` (its display name), for a reader: accuracies in percent as ``mean [low, high]``.
    ``grad_equiv=False``: without the gradient-equivalent columns (no cost weights)."""
    shown = ("final_test_acc", "selected_test_acc")
    costs = [c for c in INTERVAL_COSTS if grad_equiv or c[0] != "grad_equiv"]
    header = ["model", "optimizer", "seeds", *(f"{ACCURACIES[c]} (%)" for c in shown)]
    header += [f"epochs to {target_name(t)}%" for t in targets]
    for _, unit in costs[1:]:
        header += [f"{unit} to {target_name(t)}%" for t in targets]
    lines = ["### 95% confidence intervals", "", CI_NOTE, "", _row(header)]
    lines.append(_row(["---"] * len(header)))
    for _, r in ci.iterrows():
        who = f"{r['display']} {r['setting']}".strip()
        cells = [r["model_display"], who, f"{r['seeds']}/{r['runs']}"]
        cells += [_ci(r, c, 100, "{:.2f}") for c in shown]
        for cost, _ in costs:
            fmt = "{:.1f}" if cost == "epochs" else "{:,.0f}"
            cells += [_ci(r, f"{cost}_to_{target_name(t)}", 1, fmt, counted=True) for t in targets]
        lines.append(_row(cells))
    if paired is not None and len(paired):
        base = baseline or paired["baseline"].iloc[0]
        lines += ["", f"Final test accuracy minus {base}'s, paired by seed (points):", ""]
        lines += [_row(["model", "optimizer", "difference [95% CI]", "seeds paired"])]
        lines.append(_row(["---"] * 4))
        for _, r in paired.iterrows():
            who = f"{r['display']} {r['setting']}".strip()
            shown = _ci(r, "diff", 100, "{:+.2f}")
            lines.append(_row([r["model_display"], who, shown, str(r["paired"])]))
    return "\n".join(lines) + "\n"


def _ci(r: pd.Series, key: str, scale: float, fmt: str, counted: bool = False) -> str:
    mean, low, high = (r.get(f"{key}_{p}") for p in ("mean", "low", "high"))
    if mean is None or np.isnan(mean):
        return "–"
    text = fmt.format(mean * scale)
    if low is not None and not np.isnan(low):
        text += f" [{fmt.format(low * scale)}, {fmt.format(high * scale)}]"
    n, seeds = r.get(f"{key}_n"), r.get("seeds")
    if counted and n is not None and seeds and n != seeds:
        text += f" ({int(n)}/{seeds})"
    return text


def interval_latex(ci: pd.DataFrame, targets, name: str, grad_equiv: bool = True) -> str:
    """The intervals table as a booktabs LaTeX table (``drsom.analysis.paper.latex_table``);
    ``grad_equiv=False``: without the gradient-equivalent columns (no cost weights)."""
    from drsom.analysis.paper import Column, latex_table

    shown = [f"{d} {s}".strip() for d, s in zip(ci["display"], ci["setting"], strict=True)]
    frame = ci.assign(shown=shown)
    columns = [Column("model_display", "model"), Column("shown", "optimizer")]
    columns += [Column("seeds", "seeds")]
    columns += [Column("final_test_acc", "final test acc. (%)", scale=100)]
    columns += [Column("selected_test_acc", "test acc. at val.-best epoch (%)", scale=100)]
    columns += [
        Column(f"epochs_to_{target_name(t)}", f"epochs to {target_name(t)}%", digits=1)
        for t in targets
    ]
    columns += [
        Column(f"grad_equiv_to_{target_name(t)}", f"grad.-equiv. to {target_name(t)}%", digits=0)
        for t in targets
        if grad_equiv
    ]
    caption = f"{name}: mean and 95% confidence interval over seeds (Student-t)."
    return latex_table(frame, columns, caption, f"tab:{name}")
