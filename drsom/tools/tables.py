"""A results table per experiment, in Markdown (to read) and CSV (to compute with).

    drsom-tables --results results/runs --out results/tables
    drsom-tables --experiment digits_drsom_vs_baselines_cnn --targets 0.95 0.97

Per variant (model, optimizer and the settings that tell its configs apart, e.g. ``adam lr=0.01``;
two configs are never pooled): the final test accuracy, the test accuracy at the epoch the
validation split selects (the test set never chooses), the final validation accuracy and the final
train accuracy measured in evaluation mode (mean ± std over the finished seeds), and the epochs /
training seconds / gradient equivalents (forwards, gradients and HVPs weighted by their measured
times, ``drsom.analysis.costs``, with the weights of ``--cost-weights``, default
``cost_weights.json`` beside the run store) and the raw forwards, gradients and HVPs to reach each
target test accuracy (the experiment's own, ``targets.json`` beside the run store,
``drsom.analysis.accuracy_targets``; else ``--targets``); runs that diverged, are unfinished or were
never started are counted in their own columns. Below it, the same accuracies and costs with 95%
confidence intervals over the seeds (Student-t, ``drsom.analysis.stats``) and each variant's final
test accuracy minus the ``--baseline``'s, paired by seed. Files: ``<out>/<experiment>.md``,
``<experiment>.csv`` (one row per cell), ``<experiment>.runs.csv`` (one row per run),
``<experiment>.ci.csv`` and ``<experiment>.paired.csv`` (the intervals), ``<experiment>.tex``
(booktabs, for a paper)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis import costs, figures
from drsom.analysis.accuracy_targets import Targets
from drsom.analysis.interval_tables import interval_table, paired_table
from drsom.analysis.runs import (
    broken_in,
    describe,
    experiment_selection,
    first_readable,
    found_line,
    left_out_note,
    load_store,
    provenance,
    readable,
    refusal,
    run_machine,
    stored_experiments,
    study_of,
)
from drsom.analysis.tables import (
    experiment_table,
    interval_latex,
    interval_markdown,
    markdown,
    run_rows,
    target_name,
)
from drsom.tools.select import STUDIES, select, selection_markdown


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    left_out: list[str] = []
    report = lambda line: print(line, file=sys.stderr)  # noqa: E731
    store = load_store(args.results, report=report, left_out=left_out)
    if not readable(store):
        print(f"error: no readable runs in {args.results}", file=sys.stderr)
        return 2
    try:
        resolved = Targets.resolve(args.results, args.targets, args.targets_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    selections = [
        experiment_selection(args.results, name, store)
        for name in args.experiment or stored_experiments(store)
    ]
    broken = broken_in(selections, left_out)
    if broken and not args.allow_broken:  # a table never changes silently
        print(refusal(broken), file=sys.stderr)
        return 2
    path = args.cost_weights or costs.default_path(args.results)
    try:  # every model's weights, before anything is written
        models = [r.key()[2] for s in selections for r in s.runs]
        weights, unweighed = costs.available(costs.load_weights(path), models)
    except ValueError as exc:  # a weights file that is not one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if unweighed:
        print(costs.missing_line(unweighed, path), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for selection in selections:
        name = selection.experiment
        if not selection.runs:
            print(f"{name}: no runs in {args.results}; {found_line(store)}")
            continue
        targets = resolved.of(name)
        rows = run_rows(selection, targets, weights)
        table = experiment_table(rows, targets)
        stem = args.out / name
        rows.to_csv(stem.with_suffix(".runs.csv"), index=False)
        table.to_csv(stem.with_suffix(".csv"), index=False)
        weighed = not any(r.key()[2] in unweighed for r in selection.runs)
        about = notes(selection, targets, weights, path, left_out)
        text = markdown(table, targets, name, about, grad_equiv=weighed)
        ci = interval_table(rows)
        ci.to_csv(stem.with_suffix(".ci.csv"), index=False)
        baseline = args.baseline or study_of(name).get("baseline", "adam")
        has_baseline = baseline in set(rows["optimizer"])
        try:
            paired = paired_table(rows, baseline) if has_baseline else None
        except ValueError as exc:  # the baseline label is several variants (an lr sweep)
            print(f"{name}: no paired comparison: {exc}", file=sys.stderr)
            paired = None
        if paired is not None:
            paired.to_csv(stem.with_suffix(".paired.csv"), index=False)
        base_name = (
            rows.loc[rows["optimizer"] == baseline, "display"].iloc[0] if has_baseline else None
        )
        text += "\n" + interval_markdown(ci, paired, targets, base_name, grad_equiv=weighed)
        for tuning in tuned_by(name, store):  # the budget, space and choice behind the settings
            try:
                chosen, _ = select(
                    store,
                    tuning,
                    studies_dir=args.results.parent / STUDIES,
                    allow_broken=args.allow_broken,
                )
            except ValueError as exc:  # no finished trial yet, or a study that disagrees
                print(f"{name}: no selection table: {exc}", file=sys.stderr)
                continue
            chosen.to_csv(args.out / f"{tuning}.selection.csv", index=False)
            text += "\n" + selection_markdown(chosen, tuning)
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".tex").write_text(interval_latex(ci, targets, name, grad_equiv=weighed))
        print(f"{stem.with_suffix('.md')}:\n{text}")
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--out", type=Path, default=base / "results" / "tables")
    p.add_argument("--experiment", action="append", help="experiments/<NAME>.yaml (repeatable)")
    p.add_argument(
        "--targets",
        nargs="+",
        help="target test accuracies of every experiment, percent in (1, 100) or fractions in "
        "(0, 1) (default: each experiment's own in --targets-file, else 0.90 0.93)",
    )
    p.add_argument(
        "--targets-file",
        type=Path,
        help="each experiment's targets (default: targets.json beside --results)",
    )
    p.add_argument(
        "--cost-weights",
        type=Path,
        help="oracle weights per model (default: cost_weights.json beside --results; measured "
        "by scripts/bench_optimizers.py --oracle-weights)",
    )
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help="make the tables when runs of the selection are broken: they are left out, counted "
        "as unfinished and named in each table's notes (default: stop, naming them)",
    )
    p.add_argument(
        "--baseline",
        help="optimizer label the others are compared with, seed by seed (default: the "
        "experiment file's study.baseline, else adam)",
    )
    return p.parse_args(argv)


def tuned_by(name: str, store) -> list[str]:
    """The tuning experiments behind ``name``: itself when it is one, else those whose selected
    configs (``optimizer=<tuning experiment>/<label>``, drsom-select) its grid names."""
    from drsom.analysis.runs import experiment_names
    from drsom.cfg.compose import suite_config
    from drsom.launch.tuning import is_tuning

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


if __name__ == "__main__":
    sys.exit(main())
