"""The run store opened once for tables and figures: its runs, the experiments chosen, each one's
targets and each model's cost weights, all checked before anything is drawn or written.

``open_store`` is the one place the tools' shared steps happen, in this order: published curves
(``reference``), the targets (``drsom.analysis.accuracy_targets``), the store itself (each broken
run said on one line), the experiments' selections, the refusal of broken runs (unless
``allow_broken``: a published figure or table never changes silently), and the cost weights. A
step that fails raises ``Refused``: the lines the command prints and its exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drsom.analysis import costs
from drsom.analysis.accuracy_targets import Targets, default_path
from drsom.analysis.curves import drawn_selections
from drsom.analysis.runs import (
    Run,
    Selection,
    broken_in,
    experiment_selection,
    found_line,
    load_reference,
    load_store,
    readable,
    refusal,
    stored_experiments,
)


class Refused(Exception):
    """A command that must stop before it writes anything: ``str(self)`` is what it prints (on
    stderr), ``status`` its exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class OpenStore:
    """What every table and figure of one build reads: the runs (``store``), those the store
    could not place (``left_out``), the chosen experiments' ``selections``, their ``targets``
    and the models' cost ``weights`` (read from ``weights_path``; ``unweighed``: models
    without)."""

    results: Path
    store: list[Run]
    left_out: list[str]
    selections: list[Selection]
    targets: Targets
    weights_path: Path
    weights: dict = field(default_factory=dict)
    unweighed: list[str] = field(default_factory=list)
    reference: object = None  # the published curves (a DataFrame), when asked for
    named: bool = False  # the experiments were chosen by name (else: every one with runs)
    allow_broken: bool = False  # broken runs are left out and named, not refused

    def no_runs_line(self, selection: Selection) -> str:
        """What is said of an experiment without runs in the store."""
        return f"{selection.experiment}: no runs in {self.results}; {found_line(self.store)}"

    def targets_of(self) -> dict[str, tuple[float, ...]]:
        return {s.experiment: self.targets.of(s.experiment) for s in self.selections}


def open_store(
    results: Path,
    experiments: Sequence[str] | None = None,
    *,
    targets: Sequence[float] | None = None,
    targets_file: Path | None = None,
    cost_weights: Path | None = None,
    reference: Path | None = None,
    allow_broken: bool = False,
    need_runs: bool = True,
    need_weights: bool = True,
    need_targets: bool = True,
    drawn_only: bool = False,
    broken_then: str = "",
    report: Callable[[str], None] = to_stderr,
) -> OpenStore:
    """The store ``results`` read and checked once (see the module's docstring).

        ``experiments``: the names chosen (default: every experiment with runs). ``need_runs``: a
        store without a readable run is refused. ``need_weights``: the cost weights are read (a file
        that is not one is refused). ``need_targets``: the targets are read and checked (a tool
    without targets does not read them). ``drawn_only``: only the selections a figure draws
    (``drsom.analysis.curves.drawn_selections``) are kept, checked and weighed. ``broken_then``:
    what the refusal of broken runs adds."""
    curves = None
    if reference is not None:  # a wrong path costs nothing: checked first
        try:
            curves = load_reference(reference)
        except (OSError, ValueError) as exc:
            raise Refused(f"error: --reference {reference}: {exc}") from None
    try:
        resolved = (
            Targets.resolve(results, targets, targets_file)
            if need_targets
            else Targets(default_path(results), {})  # never read: the tool has no targets
        )
    except ValueError as exc:
        raise Refused(f"error: {exc}") from None
    left_out: list[str] = []
    store = load_store(results, report=report, left_out=left_out)
    if need_runs and not readable(store):
        raise Refused(f"error: no readable runs in {results}")
    names = list(experiments or stored_experiments(store))
    try:
        selections = [experiment_selection(results, name, store) for name in names]
        for selection in selections if need_targets else ():  # an experiment file's own
            resolved.of(selection.experiment)
    except ValueError as exc:  # an experiment that is not one, a reuse of another protocol
        raise Refused(f"error: {exc}") from None
    if drawn_only:  # only what is drawn is checked and weighed
        selections = drawn_selections(selections, named=bool(experiments))
    broken = broken_in(selections, left_out)
    if broken and not allow_broken:
        raise Refused(refusal(broken) + broken_then)
    path = cost_weights or costs.default_path(results)
    opened = OpenStore(results, store, left_out, selections, resolved, path)
    opened.reference, opened.named, opened.allow_broken = curves, bool(experiments), allow_broken
    if need_weights:
        try:  # every model's weights, before anything is drawn
            models = [r.key()[2] for s in selections for r in s.runs]
            opened.weights, opened.unweighed = costs.available(costs.load_weights(path), models)
        except ValueError as exc:  # a weights file that is not one
            raise Refused(f"error: {exc}") from None
    return opened
