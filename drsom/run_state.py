"""What state a stored run is in: one definition of the states, one function that reads them.

Every reader (the runner's skip check, sweep status, tables, figures, the wandb export) asks
``run_state`` and gets the same answer. The state is the summary's status, corrected by what the
folder shows:

* a live lock holder means ``running`` (a job training it, maybe a requeued one that has not
  written its summary yet), and a summary saying ``running`` without one is ``interrupted``
  (SIGKILL and node failures leave no chance to write anything; the lock dies with the process);
* a terminal summary whose ``metrics.csv`` has fewer rows than its epoch, or a summary that cannot
  be read, is ``broken``: reported, counted as unfinished, never averaged as if complete, and
  resumed from its checkpoint when rerun;
* no summary at all is ``missing``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from drsom.run_folder import RunDir


class Status(str, Enum):
    """A run's state; the values are what ``summary.json`` and the tables say."""

    # in the order a sweep's tally lists them
    FINISHED = "finished"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    PRUNED = "pruned"  # stopped by a tuning study's pruner: a trial's result, never averaged
    FAILED = "failed"
    BROKEN = "broken"
    MISSING = "missing"

    __str__ = str.__str__  # "finished", not "Status.FINISHED", in f-strings and files


TERMINAL = (Status.FINISHED, Status.DIVERGED, Status.PRUNED)  # never redone unless force=true
UNFINISHED = (Status.RUNNING, Status.INTERRUPTED, Status.FAILED, Status.BROKEN)
WRITTEN = (
    Status.FINISHED,
    Status.DIVERGED,
    Status.PRUNED,
    Status.RUNNING,
    Status.INTERRUPTED,
    Status.FAILED,
)


@dataclass
class RunState:
    status: Status
    summary: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the run is broken, one line


def run_state(folder: RunDir) -> RunState:
    """The state of the run in ``folder`` (see the module docstring)."""
    summary, problem = _summary(folder)
    if problem is not None:
        return RunState(Status.BROKEN, {}, problem)
    if summary is None:
        return RunState(Status.RUNNING if folder.is_locked() else Status.MISSING)
    status = Status(summary["status"])
    if status in TERMINAL:
        rows, wanted = metrics_rows(folder), summary.get("epoch")
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            return RunState(Status.BROKEN, summary, "summary.json is incomplete (no epoch)")
        if rows < wanted:
            what = f"metrics.csv has {rows} of the {wanted} epochs its summary.json reports"
            return RunState(Status.BROKEN, summary, what)
        return RunState(status, summary)
    locked = folder.is_locked()
    if locked:
        return RunState(Status.RUNNING, summary)
    if status == Status.RUNNING and locked is False:
        return RunState(Status.INTERRUPTED, summary)
    return RunState(status, summary)


def _summary(folder: RunDir) -> tuple[dict[str, Any] | None, str | None]:
    """(the summary or None when there is none, the problem when it cannot be used)."""
    try:
        summary = json.loads(folder.summary.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"summary.json cannot be read ({type(exc).__name__})"
    if not isinstance(summary, dict) or summary.get("status") not in {s.value for s in WRITTEN}:
        status = summary.get("status") if isinstance(summary, dict) else None
        return None, f"summary.json holds no known status ({status!r})"
    return summary, None


def metrics_rows(folder: RunDir) -> int:
    """Complete rows of ``metrics.csv`` (0 when it is absent or unreadable)."""
    try:
        with open(folder.metrics, newline="") as f:
            return sum(1 for row in csv.DictReader(f) if row.get("epoch"))
    except (OSError, csv.Error):
        return 0
