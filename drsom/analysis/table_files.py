"""Each experiment's tables, in Markdown (to read), CSV (to compute with) and LaTeX (the work of
``drsom tables`` and of ``drsom figures``).

Per variant (model, optimizer and the settings that tell its configs apart, e.g. ``adam lr=0.01``;
two configs are never pooled): the final test accuracy, the test accuracy at the epoch the
validation split selects (the test set never chooses), the final validation accuracy and the final
train accuracy measured in evaluation mode (mean ± std over the finished seeds), and the epochs /
training seconds / gradient equivalents (``drsom.analysis.costs``) and the raw forwards, gradients
and HVPs to reach each of the experiment's target test accuracies
(``drsom.analysis.accuracy_targets``); runs that diverged, are unfinished or were never started
are counted in their own columns. Below it, the same accuracies and costs with 95% confidence
intervals over the seeds (Student-t, ``drsom.analysis.stats``) and each variant's final test
accuracy minus the baseline's, paired by seed; then, for the tuning studies behind the
experiment's settings, the budget, space and choice of each (``drsom.analysis.tuned``).

Files per experiment: ``<out>/<experiment>.md``, ``.csv`` (one row per cell), ``.runs.csv`` (one
row per run), ``.ci.csv`` and ``.paired.csv`` (the intervals), ``.tex`` (booktabs, for a paper),
and ``<tuning experiment>.selection.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from drsom.analysis import costs, figures
from drsom.analysis.captions import describe, provenance, run_machine
from drsom.analysis.interval_tables import interval_table, paired_table
from drsom.analysis.runs import Selection, first_readable, left_out_note
from drsom.analysis.tables import (
    experiment_table,
    interval_latex,
    interval_markdown,
    markdown,
    run_rows,
    target_name,
)
from drsom.analysis.tuned import select, selection_markdown
from drsom.cfg.compose import suite_config
from drsom.cfg.experiments import experiment_names, is_tuning, study_of
from drsom.store.study import STUDIES


def write_tables(opened, out: Path, baseline: str | None = None):
    """The tables of every selection of ``opened`` (``drsom.analysis.report.OpenStore``) under
    ``out``, each printed as it is written; ``baseline``: the optimizer label of the paired
    differences (default: the experiment file's ``study.baseline``, else adam)."""
    if opened.unweighed:
        print(costs.missing_line(opened.unweighed, opened.weights_path), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for selection in opened.selections:
        if not selection.runs:
            print(opened.no_runs_line(selection))
            continue
        md = out / f"{selection.experiment}.md"
        text = experiment_tables(opened, selection, out, baseline)
        print(f"{md}:\n{text}")


def experiment_tables(opened, selection: Selection, out: Path, baseline: str | None) -> str:
    """One experiment's files; its Markdown text."""
    name = selection.experiment
    targets = opened.targets.of(name)
    rows = run_rows(selection, targets, opened.weights)
    weighed = not any(r.key()[2] in opened.unweighed for r in selection.runs)
    stem = out / name
    rows.to_csv(stem.with_suffix(".runs.csv"), index=False)
    table = experiment_table(rows, targets)
    table.to_csv(stem.with_suffix(".csv"), index=False)
    about = notes(selection, targets, opened.weights, opened.weights_path, opened.left_out)
    text = markdown(table, targets, name, about, grad_equiv=weighed)
    text += "\n" + interval_files(rows, stem, targets, baseline, weighed)
    for tuning in tuned_by(name, opened.store):  # the budget, space and choice behind the settings
        text += selection_file(opened, tuning, out, name)
    stem.with_suffix(".md").write_text(text)
    return text


def interval_files(rows: pd.DataFrame, stem: Path, targets, baseline: str | None, weighed) -> str:
    """``.ci.csv``, ``.paired.csv`` (when the baseline ran) and ``.tex``; their Markdown."""
    name = stem.name
    ci = interval_table(rows)
    ci.to_csv(stem.with_suffix(".ci.csv"), index=False)
    baseline = baseline or study_of(name).get("baseline", "adam")
    has_baseline = baseline in set(rows["optimizer"])
    try:
        paired = paired_table(rows, baseline) if has_baseline else None
    except ValueError as exc:  # the baseline label is several variants (an lr sweep)
        print(f"{name}: no paired comparison: {exc}", file=sys.stderr)
        paired = None
    if paired is not None:
        paired.to_csv(stem.with_suffix(".paired.csv"), index=False)
    base_name = rows.loc[rows["optimizer"] == baseline, "display"].iloc[0] if has_baseline else None
    stem.with_suffix(".tex").write_text(interval_latex(ci, targets, name, grad_equiv=weighed))
    return interval_markdown(ci, paired, targets, base_name, grad_equiv=weighed)


def selection_file(opened, tuning: str, out: Path, name: str) -> str:
    """The selection table of the tuning study ``tuning`` (``<out>/<tuning>.selection.csv``); its
    Markdown, or "" (said on stderr) where it has no finished trial or disagrees with its study."""
    try:
        chosen, _ = select(
            opened.store,
            tuning,
            studies_dir=opened.results.parent / STUDIES,
            allow_broken=opened.allow_broken,
        )
    except ValueError as exc:
        print(f"{name}: no selection table: {exc}", file=sys.stderr)
        return ""
    chosen.to_csv(out / f"{tuning}.selection.csv", index=False)
    return "\n" + selection_markdown(chosen, tuning)


def tuned_by(name: str, store) -> list[str]:
    """The tuning experiments behind ``name``: itself when it is one, else those whose selected
    configs (``optimizer=<tuning experiment>/<label>``, drsom-select) its grid names."""
    if name not in experiment_names():
        return []
    if is_tuning(name):
        return [name] if any(r.config.get("experiment") == name for r in store) else []
    params = suite_config([f"experiment={name}"], hydra=True, resolve=False)["hydra"]["sweeper"]
    choices = str((params.get("params") or {}).get("optimizer", "")).split(",")
    folders = dict.fromkeys(c.strip().split("/")[0] for c in choices if "/" in c)
    # a folder of optimizer configs (``optimizer=ablation/...``) is not a tuning experiment
    return [f for f in folders if f in experiment_names() and is_tuning(f)]


def notes(selection, targets, weights, path=None, left_out=()) -> str:
    """What the numbers are, under the heading: protocol per model, statistics, units, and the
    runs left out (broken) and the models without cost weights, when there are any."""
    lines = []
    gone = left_out_note(selection.runs)
    if left_out:  # runs the store could not place: maybe of this experiment
        gone = "; ".join(filter(None, [gone, "not placed: " + ", ".join(left_out)]))
    if gone:
        lines.append(gone + ".")
    for pair in dict.fromkeys(r.key()[1:3] for r in selection.runs):
        runs = [r for r in selection.runs if r.key()[1:3] == pair]
        seeds = len({r.key()[4] for r in runs})
        shown = figures.protocol_title(describe(first_readable(runs)), seeds)
        lines.append(shown.replace("\n", "; ") + ".")
    origin = provenance(selection.runs)
    lines.append(origin[:1].upper() + origin[1:] + ".")
    goals = ", ".join(f"{target_name(t)}%" for t in targets)
    lines.append(
        "Accuracies: mean ± sample std over the finished seeds (seeds: finished/grid). "
        f"To reach {goals} test accuracy: the first epoch at or above it, the training seconds "
        "(evaluation excluded), the gradient equivalents and the forwards / gradients / "
        "Hessian-vector products counted up to the end of that epoch (forwards include those "
        "of the gradients), as mean ± std over the finished seeds that reached it ((k/n) when "
        "not all did)."
    )
    models = [r.key()[2] for r in selection.runs]
    note = costs.weights_note(weights, models, [run_machine(r.summary) for r in selection.runs])
    if note:
        extra = "; extra forwards: those not part of a gradient."
        lines.append(note[:1].upper() + note[1:] + extra)
    unweighed = [m for m in dict.fromkeys(models) if m not in weights]
    if unweighed:
        missing = costs.missing_note(unweighed, path or costs.WEIGHTS_FILE)
        lines.append(missing[:1].upper() + missing[1:] + ".")
    return "\n\n".join(lines)
