"""Every figure and table from a run store, replaced all at once: what ``make figures`` runs.

    drsom-figures [--results results/runs] [--figures results/figures]
        [--tables results/tables] [--reference ../shared/reference/adabelief_cifar10_curves.csv]
        [--cost-weights results/cost_weights.json] [--experiment NAME ...] [--targets 90 93]
        [--targets-file results/targets.json]

Everything is drawn into a temporary folder beside the outputs first (per-epoch curves of all four
metrics, test accuracy against time, train (evaluation-mode) and test accuracy against gradient
equivalents, then the tables, then, for each target, a performance profile of the gradient
equivalents to reach it across the workloads of the experiments that have that target,
``profiles/grad_equiv-to-<target>``, when they hold two or more (each experiment's targets:
``drsom.analysis.accuracy_targets``); for each stored tuning study, its optimization history and
slice plot, ``studies/<study>-history``). Every model's cost weights are read before anything is
drawn (a model without them gets no gradient-equivalent figure, profile or column, said in one line
and in the tables' notes), and a broken run in the selection stops the build before anything is
replaced unless ``--allow-broken`` (then the tables and captions name what was left out). Only when
every step succeeded do the new folders take the place of the old ones, so a failure (a wrong
``--reference``, a broken run store, a full disk) leaves the committed figures and tables as they
were, and nothing stale survives a success.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from drsom.analysis import costs, figures, profiles
from drsom.analysis.accuracy_targets import Targets
from drsom.analysis.runs import (
    broken_in,
    experiment_selection,
    left_out_note,
    load_reference,
    load_store,
    provenance,
    refusal,
    run_machine,
    stored_experiments,
    study_of,
)
from drsom.analysis.studies import draw_studies
from drsom.analysis.tables import run_rows, target_name
from drsom.tools import make_tables, plot_curves

# (x axis, metrics); None: every metric
FIGURE_SETS = (
    ("epoch", None),
    ("time", ["test_acc"]),
    ("grad_equiv", ["train_eval_acc", "test_acc"]),  # the seed's two figures on the cost axis
)
PROFILE_DIR = "profiles"
STUDY_DIR = "studies"  # per stored tuning study: its optimization history and slice plot


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    if args.reference is not None:
        try:  # checked before anything is drawn: a wrong path costs nothing
            load_reference(args.reference)
        except (OSError, ValueError) as exc:
            print(f"error: --reference {args.reference}: {exc}", file=sys.stderr)
            return 2
    said, left_out = [], []  # the tools report broken runs themselves when they go on
    try:  # every model's weights and the targets, before anything is drawn
        resolved = Targets.resolve(args.results, args.targets, args.targets_file)
        store = load_store(args.results, report=said.append, left_out=left_out)
        names = args.experiment or stored_experiments(store)
        selections = [experiment_selection(args.results, n, store) for n in names]
        targets = {s.experiment: resolved.of(s.experiment) for s in selections}
        path = args.cost_weights or costs.default_path(args.results)
        models = [r.key()[2] for s in selections for r in s.runs]
        weights, _ = costs.available(costs.load_weights(path), models)  # the tools say which
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    broken = broken_in(selections, left_out)
    if broken and not args.allow_broken:  # published figures and tables never change silently
        for line in said:
            print(line, file=sys.stderr)
        print(refusal(broken) + "; nothing replaced", file=sys.stderr)
        return 2
    shared = ["--results", str(args.results), "--cost-weights", str(path)]
    shared += ["--allow-broken"] if args.allow_broken else []
    for name in args.experiment or []:
        shared += ["--experiment", name]
    parent = args.figures.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".figures-", dir=parent) as tmp:
        drawn, tables = Path(tmp) / "figures", Path(tmp) / "tables"
        for x, metrics in FIGURE_SETS:
            cmd = [*shared, "--out", str(drawn), "--x", x]
            cmd += ["--metrics", *metrics] if metrics else []
            cmd += ["--reference", str(args.reference)] if args.reference else []
            if plot_curves.main(cmd) != 0:
                print("error: figures not replaced (see above)", file=sys.stderr)
                return 1
        cmd = [*shared, "--out", str(tables), *resolved.options()]
        if make_tables.main(cmd) != 0:
            print("error: figures and tables not replaced (see above)", file=sys.stderr)
            return 1
        draw_profiles(selections, targets, weights, drawn / PROFILE_DIR)
        from drsom.store.journal import JournalError  # optuna's: imported when drawn

        try:
            draw_studies(args.results, drawn / STUDY_DIR)
        except JournalError as exc:
            print(f"error: {exc}; figures and tables not replaced", file=sys.stderr)
            return 2
        drawn.mkdir(exist_ok=True)  # an empty store still gets (empty) folders
        _replace(args.figures, drawn)
        _replace(args.tables, tables)
    print(f"replaced {args.figures} and {args.tables}")
    return 0


def draw_profiles(selections, targets, weights, out: Path) -> list[Path]:
    """Per target (``targets``: each experiment's), the performance profile of the gradient
    equivalents to reach it over the workloads of the experiments that have it; none with fewer
    than two workloads (a profile of one workload only says who was cheapest there)."""
    from drsom.launch.tuning import is_tuning

    # a tuning experiment's runs are trials, one seed each at drawn settings: not a workload;
    # a study that shows another's runs (study.reuse) is that one's workload again, not a second;
    # a model without cost weights has no cost here (not "never reached"): its runs stay out
    selections = [
        replace(s, runs=[r for r in s.runs if r.key()[2] in weights])
        for s in selections
        if s.runs and not is_tuning(s.experiment) and not study_of(s.experiment).get("reuse")
    ]
    selections = [s for s in selections if s.runs]
    all_rows = {s.experiment: run_rows(s, targets[s.experiment], weights) for s in selections}
    written = []
    for t in sorted({t for s in selections for t in targets[s.experiment]}):
        rows = {name: r for name, r in all_rows.items() if t in targets[name]}
        runs = [r for s in selections if s.experiment in rows for r in s.runs]
        costs_to, tuned = profiles.workload_costs(rows, t) if rows else (None, [])
        if costs_to is None or len(costs_to) < 2:
            print(f"no performance profile for {target_name(t)}%: fewer than 2 workloads")
            continue
        title = (
            f"Gradient equivalents to {target_name(t)}% test accuracy: performance profile "
            f"over {len(costs_to)} workloads"
        )
        machines = [run_machine(r.summary) for r in runs]
        note = costs.weights_note(weights, [r.key()[2] for r in runs], machines)
        if tuned:
            note += f"; cheapest variant per workload for: {', '.join(tuned)}"
        note += f"; {provenance(runs)}"
        if gone := left_out_note(runs):
            note += f"; {gone}"
        fig = profiles.profile_figure(costs_to, title, figures.looks(runs), note)
        written += figures.save(fig, out / f"grad_equiv-to-{target_name(t)}")
    return written


def _replace(target: Path, new: Path) -> None:
    """``new`` takes the name ``target``; the old folder is moved away first, then deleted."""
    old = new.with_name(new.name + ".old")
    if target.exists():
        target.replace(old)
    new.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--figures", type=Path, default=base / "results" / "figures")
    p.add_argument("--tables", type=Path, default=base / "results" / "tables")
    p.add_argument("--reference", type=Path, help="published curves (see drsom-curves)")
    p.add_argument("--cost-weights", type=Path, help="oracle weights (see drsom-curves)")
    p.add_argument("--experiment", action="append", help="experiments/<NAME>.yaml (repeatable)")
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help="build when runs of the selection are broken: they are left out and named in the "
        "tables and captions (default: stop before anything is replaced, naming them)",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        help="target test accuracies of every experiment's tables and the performance profiles "
        "(default: each experiment's own in --targets-file, else 0.90 0.93)",
    )
    p.add_argument(
        "--targets-file",
        type=Path,
        help="each experiment's targets (default: targets.json beside --results)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
