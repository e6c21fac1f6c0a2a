"""A results table per experiment, in Markdown (to read) and CSV (to compute with).

    drsom-tables --results results/runs --out results/tables
    drsom-tables --experiment digits_drsom_vs_baselines_cnn --targets 0.95 0.97

Per variant (model, optimizer and the settings that tell its configs apart, e.g. ``adam lr=0.01``;
two configs are never pooled): final and best test accuracy and final train accuracy (mean ± std
over the finished seeds), and the epochs / training seconds / gradient evaluations + HVPs to reach
each target test accuracy; runs that diverged, are unfinished or were never started are counted in
their own columns. Files: ``<out>/<experiment>.md``, ``<experiment>.csv`` (one row per cell) and
``<experiment>.runs.csv`` (one row per run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis import figures
from drsom.analysis.runs import (
    describe,
    experiment_selection,
    found_line,
    load_store,
    provenance,
    readable,
    stored_experiments,
)
from drsom.analysis.tables import (
    DEFAULT_TARGETS,
    experiment_table,
    markdown,
    run_rows,
    target_name,
)


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    store = load_store(args.results, report=lambda line: print(line, file=sys.stderr))
    if not readable(store):
        print(f"error: no readable runs in {args.results}", file=sys.stderr)
        return 2
    targets = [t / 100 if t > 1 else t for t in args.targets]  # 93 and 0.93 both mean 93%
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.experiment or stored_experiments(store):
        selection = experiment_selection(args.results, name, store)
        if not selection.runs:
            print(f"{name}: no runs in {args.results}; {found_line(store)}")
            continue
        rows = run_rows(selection, targets)
        table = experiment_table(rows, targets)
        stem = args.out / name
        rows.to_csv(stem.with_suffix(".runs.csv"), index=False)
        table.to_csv(stem.with_suffix(".csv"), index=False)
        text = markdown(table, targets, name, notes(selection, targets))
        stem.with_suffix(".md").write_text(text)
        print(f"{stem.with_suffix('.md')}:\n{text}")
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--out", type=Path, default=base / "results" / "tables")
    p.add_argument("--experiment", action="append", help="experiments/<NAME>.yaml (repeatable)")
    p.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=list(DEFAULT_TARGETS),
        help="target test accuracies, fractions or percent (default: 0.90 0.93)",
    )
    return p.parse_args(argv)


def notes(selection, targets) -> str:
    """What the numbers are, under the heading: protocol per model, statistics, units."""
    lines = []
    for pair in dict.fromkeys(r.key()[1:3] for r in selection.runs):
        runs = [r for r in selection.runs if r.key()[1:3] == pair]
        seeds = len({r.key()[4] for r in runs})
        lines.append(figures.protocol_title(describe(runs[0]), seeds).replace("\n", "; ") + ".")
    origin = provenance(selection.runs)
    lines.append(origin[:1].upper() + origin[1:] + ".")
    goals = ", ".join(f"{target_name(t)}%" for t in targets)
    lines.append(
        "Accuracies: mean ± sample std over the finished seeds (seeds: finished/grid). "
        f"To reach {goals} test accuracy: the first epoch at or above it, the training seconds "
        "(evaluation excluded) and the gradient evaluations + Hessian-vector products up to the "
        "end of that epoch, as mean ± std over the finished seeds that reached it ((k/n) when not "
        "all did)."
    )
    return "\n\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
