"""Accuracy and loss curves of an experiment's runs, one figure per model and metric.

    drsom-curves --results results/runs --out results/figures
    drsom-curves --experiment digits_drsom_vs_baselines_cnn --x time
    drsom-curves --x grad_equiv --cost-weights results/cost_weights.json --preset column
    drsom-curves --experiment adabelief_protocol_resnet34 \\
        --reference ../shared/reference/adabelief_cifar10_curves.csv

Which runs belong to a figure is the experiment's grid (experiments/<NAME>.yaml, expanded as the
sweep expands it); without --experiment every experiment with runs in --results is drawn. A line
per optimizer is the mean over its seeds, with a band (±1 std; min-max for 2 seeds). Files:
``<out>/<experiment>/<model>-<metric>-<x>.png`` and ``.pdf``.

``--x grad_equiv``: the cost in gradient equivalents (``drsom.analysis.costs``), with each
model's weights from ``--cost-weights`` (default: ``cost_weights.json`` beside the run store),
printed under the title with where they were measured; a model without weights stops before
anything is drawn. ``--x time``: the title says the machine and whether the runs had it alone.
``--preset column|full``: the paper's sizes (``drsom.analysis.paper.PRESETS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drsom.analysis import costs, figures, paper
from drsom.analysis.runs import (
    Selection,
    broken_in,
    describe,
    experiment_selection,
    first_readable,
    found_line,
    left_out_note,
    load_reference,
    load_store,
    metrics_frame,
    provenance,
    readable,
    refusal,
    run_machine,
    stored_experiments,
    wall_clock_note,
)
from drsom.launch.tuning import is_tuning
from drsom.store.identity import config_hash
from drsom.store.state import UNFINISHED, Status

# drawn by default: the clean train metric (``train_eval_*``) beside the test set's; the running
# train means and the validation curves on request (``--metrics``)
METRICS = ("train_eval_acc", "test_acc", "train_eval_loss", "test_loss")


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    left_out: list[str] = []
    report = lambda line: print(line, file=sys.stderr)  # noqa: E731
    store = load_store(args.results, report=report, left_out=left_out)
    if not readable(store):
        print(f"error: no readable runs in {args.results}", file=sys.stderr)
        return 2
    try:
        reference = load_reference(args.reference) if args.reference else None
    except (OSError, ValueError) as exc:  # a wrong path or a file in another format
        print(f"error: --reference {args.reference}: {exc}", file=sys.stderr)
        return 2
    selections = []
    for name in args.experiment or stored_experiments(store):
        if not args.experiment and is_tuning(name):
            # one line per trial of every optimizer: its tables say more (--experiment draws it)
            print(f"{name}: a tuning experiment, not drawn (its tables rank the trials)")
            continue
        selection = experiment_selection(args.results, name, store)
        if missing_line(selection):
            print(missing_line(selection))
        if not selection.runs:
            print(f"{name}: no runs in {args.results}; {found_line(store)}")
            continue
        selections.append(selection)
    broken = broken_in(selections, left_out)
    if broken and not args.allow_broken:  # a figure never changes silently
        print(refusal(broken), file=sys.stderr)
        return 2
    weights = None
    if args.x == "grad_equiv":  # every model's weights, before anything is drawn
        path = args.cost_weights or costs.default_path(args.results)
        try:
            models = [r.key()[2] for s in selections for r in s.runs]
            weights, unweighed = costs.available(costs.load_weights(path), models)
        except ValueError as exc:  # a weights file that is not one
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if unweighed:  # their figures have no axis to be drawn on: left out, said once
            print(costs.missing_line(unweighed, path), file=sys.stderr)
    written = []
    for selection in selections:
        written += plot_experiment(
            selection, args.out, args.x, args.metrics, reference, weights, args.preset
        )
    for path in written:
        print(path)
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--out", type=Path, default=base / "results" / "figures")
    p.add_argument("--experiment", action="append", help="experiments/<NAME>.yaml (repeatable)")
    p.add_argument("--x", choices=tuple(figures.X_AXES), default="epoch")
    p.add_argument("--metrics", nargs="+", choices=tuple(figures.METRICS), default=list(METRICS))
    p.add_argument(
        "--reference",
        type=Path,
        help="published curves, long format (model, optimizer, epoch, train_acc, test_acc in %%)",
    )
    p.add_argument(
        "--cost-weights",
        type=Path,
        help="oracle weights per model for --x grad_equiv (default: cost_weights.json beside "
        "--results; measured by scripts/bench_optimizers.py --oracle-weights)",
    )
    p.add_argument("--preset", choices=tuple(paper.PRESETS), help="paper size (3.3 / 6.75 in)")
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help="draw when runs of the selection are broken: they are left out, and the legend and "
        "caption name them (default: stop, naming them)",
    )
    return p.parse_args(argv)


def missing_line(selection: Selection) -> str | None:
    if not selection.missing:
        return None
    ids = ", ".join(rid for _, rid in selection.missing[:3])
    more = ", ..." if len(selection.missing) > 3 else ""
    n = len(selection.missing)
    return f"{selection.experiment}: {n} run(s) of the grid missing: {ids}{more}"


def plot_experiment(
    selection: Selection,
    out: Path,
    x: str,
    metrics,
    reference,
    weights: dict | None = None,
    preset: str | None = None,
) -> list[Path]:
    """The figures of one selection: per dataset and model, one per metric (a line per variant).

    Files are ``<model>-<metric>-<x>`` when the selection holds one dataset (an experiment
    file's grid), ``<data>-<model>-<metric>-<x>`` otherwise (ad-hoc runs of several datasets).
    ``weights`` (model -> ``costs.Weights``): needed for ``x="grad_equiv"``; the title then
    states them. ``x="time"``: the title states the machine and whether it was shared.
    """
    if x == "grad_equiv" and weights is None:
        raise ValueError("x='grad_equiv' needs the models' cost weights (costs.weights_for)")
    frame = metrics_frame(selection.runs, weights)
    order = list(dict.fromkeys(r.key()[3] for r in selection.runs))  # the grid's order
    pairs = list(dict.fromkeys((r.key()[1], r.key()[2]) for r in selection.runs))
    several_datasets = len({data for data, _ in pairs}) > 1
    written = []
    for data, model in pairs:
        runs = [r for r in selection.runs if r.key()[1:3] == (data, model)]
        if x == "grad_equiv" and model not in weights:  # no cost weights: said by the caller
            continue
        facts = describe(first_readable(runs))
        seeds = len({r.key()[4] for r in runs})
        title = figures.protocol_title(facts, seeds)
        if x == "grad_equiv":
            machines = [run_machine(r.summary) for r in runs]
            title += "\n" + costs.weights_note(weights, [model], machines)
        if x == "time" and wall_clock_note(runs):
            title += "\n" + wall_clock_note(runs)
        ref = _reference_for(reference, facts, x)
        if reference is not None and ref is None:
            print(
                f"{selection.experiment}: no published curves for {facts['data']} / {model} "
                f"with --x {x}; drawn without them"
            )
        part = frame[(frame["data"] == data) & (frame["model"] == model)]
        stem = f"{data}-{model}" if several_datasets else model
        for metric in metrics:
            fig = figures.curve_figure(
                part,
                metric,
                x,
                title,
                preset=preset,
                order=order,
                legend_notes=legend_notes(runs),
                reference=ref,
                shown=figures.looks(runs),
                note="; ".join(filter(None, [left_out_note(runs), provenance(runs)])),
            )
            written += figures.save(fig, out / selection.experiment / f"{stem}-{metric}-{x}")
    return written


def legend_notes(runs) -> dict[str, str]:
    """Per variant: "1 diverged", "2 unfinished" (a mean over fewer runs is never silent), and
    "same as DRSOM" for a variant that is another label's config under a second name (the
    same numbers: its line lies under the other one)."""
    notes: dict[str, list[str]] = {}
    for r in runs:
        what = {
            Status.DIVERGED: "diverged",
            **dict.fromkeys(UNFINISHED, "unfinished"),
            Status.BROKEN: "broken, left out",
        }.get(r.status)
        if what:
            notes.setdefault(r.variant, []).append(what)
    text = {
        variant: ", ".join(f"{whats.count(w)} {w}" for w in dict.fromkeys(whats))
        for variant, whats in notes.items()
    }
    first: dict[tuple, str] = {}
    for r in runs:
        lbl = r.key()[3]
        same = first.setdefault(_unlabelled(r), lbl)
        if same != lbl and "same as" not in text.get(r.variant, ""):
            same_note = f"same as {figures.name(same, figures.looks(runs))}"
            text[r.variant] = "; ".join(filter(None, [text.get(r.variant), same_note]))
    return text


def _unlabelled(run) -> tuple:
    """The run's config hash and seed with the optimizer's label taken out."""
    cfg = json.loads(json.dumps(run.config))
    cfg["optimizer"].pop("label", None)
    return config_hash(cfg), run.key()[4]


def _reference_for(reference, facts: dict, x: str):
    """The published curves of this model, when the figure is theirs: CIFAR-10, per epoch."""
    if reference is None:
        return None
    if facts["data"] != "cifar10" or x != "epoch":
        return None
    ref = reference[reference["model"] == facts["model"]]
    return ref if len(ref) else None


if __name__ == "__main__":
    sys.exit(main())
