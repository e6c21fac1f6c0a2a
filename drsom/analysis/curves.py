"""Accuracy and loss curves of an experiment's runs, one figure per model and metric (the work of
``drsom curves`` and of ``drsom figures``).

Which runs belong to a figure is the experiment's grid (``drsom.analysis.runs``). A line per
optimizer is the mean over its seeds, with a band (±1 std; min-max for 2 seeds). Files:
``<out>/<experiment>/<model>-<metric>-<x>.png`` and ``.pdf``. ``x="grad_equiv"``: the cost in
gradient equivalents (``drsom.analysis.costs``), the model's weights printed under the title with
where they were measured; ``x="time"``: the title says the machine and whether the runs had it
alone; published curves (``reference``) are drawn beside CIFAR-10's per-epoch figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from drsom.analysis import costs, figures
from drsom.analysis.captions import describe, provenance, run_machine, wall_clock_note
from drsom.analysis.runs import Selection, first_readable, left_out_note, metrics_frame
from drsom.cfg.experiments import is_tuning
from drsom.store.identity import config_hash
from drsom.store.state import UNFINISHED, Status

# drawn by default: the clean train metric (``train_eval_*``) beside the test set's; the running
# train means and the validation curves on request (``--metrics``)
METRICS = ("train_eval_acc", "test_acc", "train_eval_loss", "test_loss")


def draw_curves(
    selections: Sequence[Selection],
    out: Path,
    x: str,
    metrics: Sequence[str] = METRICS,
    reference=None,
    weights: dict | None = None,
    preset: str | None = None,
) -> list[Path]:
    """Every selection's figures (``plot_experiment``), in order; the files written."""
    written = []
    for selection in selections:
        written += plot_experiment(selection, out, x, metrics, reference, weights, preset)
    return written


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


def drawn_selections(selections: Sequence[Selection], named: bool) -> list[Selection]:
    """The selections whose curves are drawn: a tuning study's trials are ranked by its tables
    instead (each said on one line), unless the study was named."""
    kept = []
    for selection in selections:
        if not named and is_tuning(selection.experiment):
            name = selection.experiment
            print(f"{name}: a tuning experiment, not drawn (its tables rank the trials)")
            continue
        kept.append(selection)
    return kept


def drawable(opened, selections: Sequence[Selection]) -> list[Selection]:
    """Those of ``selections`` (of ``opened``, a ``drsom.analysis.report.OpenStore``) that have
    runs to draw; each grid run the store lacks, and each experiment without runs, said on one
    line."""
    kept = []
    for selection in selections:
        if line := missing_line(selection):
            print(line)
        if not selection.runs:
            print(opened.no_runs_line(selection))
            continue
        kept.append(selection)
    return kept
