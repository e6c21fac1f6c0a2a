"""Every figure and table from a run store, replaced all at once: the work of ``drsom figures``
(``make figures``).

``build_all`` draws into a temporary folder beside the outputs first: per-epoch curves of all four
metrics, test accuracy against time, train (evaluation-mode) and test accuracy against gradient
equivalents (``drsom.analysis.curves``), then the tables (``drsom.analysis.table_files``), then,
for each target, a performance profile of the gradient equivalents to reach it across the
workloads of the experiments that have that target, ``profiles/grad_equiv-to-<target>``, when they
hold two or more; and for each stored tuning study its optimization history and slice plot,
``studies/<study>-history``. All of it reads the store opened once (``drsom.analysis.report``):
every model's cost weights are read before anything is drawn (a model without them gets no
gradient-equivalent figure, profile or column, said in one line and in the tables' notes). Only
when every step succeeded do the new folders take the place of the old ones, so a failure (a
broken study journal, a full disk) leaves the committed figures and tables as they were, and
nothing stale survives a success.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from drsom.analysis import costs, figures, profiles
from drsom.analysis.captions import provenance, run_machine
from drsom.analysis.curves import METRICS, draw_curves, drawable, drawn_selections
from drsom.analysis.report import OpenStore, Refused
from drsom.analysis.runs import left_out_note
from drsom.analysis.studies import draw_studies
from drsom.analysis.table_files import write_tables
from drsom.analysis.tables import run_rows, target_name
from drsom.cfg.experiments import is_tuning, study_of

# (x axis, metrics); None: every metric
FIGURE_SETS = (
    ("epoch", None),
    ("time", ["test_acc"]),
    ("grad_equiv", ["train_eval_acc", "test_acc"]),  # the seed's two figures on the cost axis
)
PROFILE_DIR = "profiles"
STUDY_DIR = "studies"  # per stored tuning study: its optimization history and slice plot


def build_all(opened: OpenStore, figures_dir: Path, tables_dir: Path) -> None:
    """Every figure and table of ``opened`` drawn, then put in place of ``figures_dir`` and
    ``tables_dir`` together. ``Refused`` (exit 1; nothing replaced) when drawing fails (a stored
    study that cannot be read: exit 2), and says which folder was replaced if the second rename
    fails."""
    from drsom.store.journal import JournalError  # optuna's: imported when drawn

    with _staged(figures_dir) as drawn, _staged(tables_dir) as tables:
        try:
            shown = drawable(opened, drawn_selections(opened.selections, opened.named))
            for x, metrics in FIGURE_SETS:
                weights = opened.weights if x == "grad_equiv" else None
                draw_curves(shown, drawn, x, metrics or METRICS, opened.reference, weights)
            write_tables(opened, tables)
            draw_profiles(
                opened.selections, opened.targets_of(), opened.weights, drawn / PROFILE_DIR
            )
            draw_studies(opened.results, drawn / STUDY_DIR)
        except JournalError as exc:
            raise Refused(f"error: {exc}; figures and tables not replaced") from None
        except (OSError, ValueError) as exc:  # a full disk, a figure that cannot be drawn
            raise Refused(f"error: {exc}; figures and tables not replaced", 1) from None
        drawn.mkdir(exist_ok=True)  # an empty store still gets (empty) folders
        tables.mkdir(exist_ok=True)
        _replace(figures_dir, drawn)
        try:
            _replace(tables_dir, tables)
        except OSError as exc:
            raise Refused(
                f"error: {exc}; {figures_dir} was replaced, {tables_dir} was not: rerun", 1
            ) from None


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A new folder to draw into, beside ``target`` (so that it can take its name by a rename on
    one filesystem); gone afterwards, whatever happened."""
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=parent) as tmp:
        yield Path(tmp) / target.name


def draw_profiles(selections, targets, weights, out: Path) -> list[Path]:
    """Per target (``targets``: each experiment's), the performance profile of the gradient
    equivalents to reach it over the workloads of the experiments that have it; none with fewer
    than two workloads (a profile of one workload only says who was cheapest there)."""
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
