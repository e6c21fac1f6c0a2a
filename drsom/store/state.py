"""What state a stored run is in: one definition of the states, one function that reads them.

Every reader (the runner's skip check, sweep status, tables, figures, the wandb export) asks
``run_state`` and gets the same answer. The state is the summary's status, corrected by what the
folder shows:

* a live lock holder means ``running`` (a job training it, maybe a requeued one that has not
  written its summary yet), and a summary saying ``running`` without one is ``interrupted``
  (SIGKILL and node failures leave no chance to write anything; the lock dies with the process);
* a run whose files do not make one complete, consistent record is ``broken`` (``check``):
  reported with the reason on one line, counted as unfinished, never averaged as if complete,
  and resumed from its checkpoint when rerun;
* no summary at all is ``missing``.

What "complete and consistent" means is decided here once, for every reader: the summary is a
JSON object with a known status (a terminal one with its epoch, a finished one with its final
test accuracy); ``config.yaml`` parses and hashes to the folder's name (an edited config would
otherwise be averaged under a run id that says something else); ``metrics.csv`` parses whole (the
last row ends with a line end, so a copy cut mid-row is seen; every row has every cell; every
cell is a number or empty; the epochs are 1, 2, ...), and for a terminal run has exactly the
epochs its summary reports, the last of which is the summary's ``final`` row; a summary is
missing only where nothing else was written (a metrics.csv without one is a lost record); and
the summary's seal (``drsom.store.folder.SEAL``) matches the summary, and for a terminal run
config.yaml, metrics.csv and steps.csv as well: a number typed over anywhere, which the other
checks cannot see, is found there. The rows read are handed back (``RunState.metrics``): a
reader never parses the file a second, laxer way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from drsom.store.folder import SEAL, SEALED_FILES, RunDir, file_digest, seal_intact


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


# What ``summary.json``'s ``final`` holds: the last epoch's row of these (drsom.job.record).
FINAL_KEYS = (
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "val_loss",
    "val_acc",
    "train_eval_loss",
    "train_eval_acc",
)


@dataclass
class RunState:
    status: Status
    summary: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the run is broken, one line
    # metrics.csv as read and checked: one dict per epoch, every cell a float (NaN: empty)
    metrics: list[dict[str, float]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None  # config.yaml as read (None: absent or unreadable)


def run_state(folder: RunDir) -> RunState:
    """The state of the run in ``folder`` (see the module docstring)."""
    summary, problem = _summary(folder)
    config = folder.read_config()
    if problem is not None:
        return RunState(Status.BROKEN, {}, problem, config=config)
    if summary is None:
        if folder.is_locked():
            return RunState(Status.RUNNING, config=config)
        if _has_rows(folder):  # the runner writes its summary before any row: the record is lost
            problem = "summary.json is missing, beside a metrics.csv with rows (the record is lost)"
            return RunState(Status.BROKEN, {}, problem, config=config)
        return RunState(Status.MISSING, config=config)
    status = Status(summary["status"])
    if status not in TERMINAL:
        locked = folder.is_locked()
        if locked:  # its process rewrites the files (atomically): its state, not a reader's
            return RunState(Status.RUNNING, summary, config=config)
        if status == Status.RUNNING and locked is False:
            status = Status.INTERRUPTED
    columns, rows, problem = read_metrics(folder)
    problem = problem or _config_problem(folder, config) or _summary_problem(folder, summary)
    if problem is None and status in TERMINAL:
        problem = _consistency_problem(summary, rows)
    if problem is None:
        problem = _seal_problem(folder, summary, terminal=status in TERMINAL)
    if problem is not None:
        return RunState(Status.BROKEN, summary, problem, rows, columns, config)
    return RunState(status, summary, None, rows, columns, config)


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


def _summary_problem(folder: RunDir, summary: dict[str, Any]) -> str | None:
    """What a written summary lacks to be the record of this folder's run (None: nothing)."""
    if summary.get("run_id", folder.name) != folder.name:
        return f"summary.json is the summary of run {summary['run_id']!r}, not of this folder"
    if Status(summary["status"]) not in TERMINAL:
        return None
    if not _is_int(summary.get("epoch")):
        return "summary.json is incomplete (no epoch)"
    final = summary.get("final")
    if summary["status"] == Status.FINISHED and (
        not isinstance(final, dict) or not _is_number(final.get("test_acc"))
    ):
        return "summary.json is incomplete (no final test_acc)"
    return None


def _has_rows(folder: RunDir) -> bool:
    """Whether metrics.csv holds anything past its header (or cannot be read: not nothing)."""
    try:
        return len(folder.metrics.read_bytes().splitlines()) > 1
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _seal_problem(folder: RunDir, summary: dict[str, Any], *, terminal: bool) -> str | None:
    """Whether the summary, and a terminal run's files, are as its run wrote them (the seal)."""
    if SEAL not in summary:
        return None  # written before summaries were sealed: the other checks are all there is
    if not seal_intact(summary):
        return "summary.json was changed after its run wrote it (its digest does not match)"
    if not terminal:  # its files may be newer than its summary (a kill between two writes)
        return None
    seal = summary[SEAL]
    for name in SEALED_FILES:
        if name in seal and file_digest(folder.path / name) != seal[name]:
            if seal[name] is None:
                return f"{name} was not there when its run ended (summary.json's digest)"
            if not (folder.path / name).exists():
                return f"{name} is missing (its run ended with one: summary.json's digest)"
            return (
                f"{name} was changed after its run ended (its digest in summary.json does not "
                "match)"
            )
    return None


def _config_problem(folder: RunDir, config: dict[str, Any] | None) -> str | None:
    """Whether ``config.yaml`` is there, parses, and names this folder's run (its run id)."""
    from drsom.store.identity import run_id  # identity reads the data package's defaults

    if config is None:
        present = folder.config.exists()
        return "config.yaml cannot be read" if present else "config.yaml is missing"
    try:
        rid = run_id(config)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return f"config.yaml is of another format (no {exc})"
    if rid != folder.name:
        return f"config.yaml no longer matches run id {folder.name}: edited? (it hashes to {rid})"
    return None


def _consistency_problem(summary: dict[str, Any], rows: list[dict[str, float]]) -> str | None:
    """A terminal run's metrics.csv against its summary: the same epochs, the same last row."""
    wanted = summary["epoch"]
    if len(rows) != wanted:
        return f"metrics.csv has {len(rows)} of the {wanted} epochs its summary.json reports"
    final = summary.get("final")
    if not rows or not isinstance(final, dict):
        return None
    last = rows[-1]
    for key in FINAL_KEYS:
        if key not in final or key not in last:
            continue
        stored, row = final[key], last[key]
        same = (stored is None and math.isnan(row)) or (_is_number(stored) and stored == row)
        if not same:
            return (
                f"metrics.csv's last row has {key} {_show(row)}, its summary.json {stored!r}: "
                "one of them was changed"
            )
    return None


def read_metrics(folder: RunDir) -> tuple[list[str], list[dict[str, float]], str | None]:
    """(columns, rows, problem) of ``metrics.csv``; no file is no rows (a run before its first
    epoch ends). Every check of the module docstring's; the first one failed is the problem."""
    try:
        raw = folder.metrics.read_bytes()
    except FileNotFoundError:
        return [], [], None
    except OSError as exc:
        return [], [], f"metrics.csv cannot be read ({type(exc).__name__})"
    if not raw:
        return [], [], None
    if not raw.endswith(b"\n"):  # every write ends its last row; a copy cut short does not
        return [], [], "metrics.csv is cut short (its last row has no line end)"
    try:
        table = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        return [], [], f"metrics.csv cannot be parsed ({type(exc).__name__})"
    columns, body = table[0], [r for r in table[1:] if r]
    if "epoch" not in columns:
        return [], [], "metrics.csv has no epoch column"
    rows = []
    for n, cells in enumerate(body, start=2):  # line numbers as an editor shows them
        if len(cells) != len(columns):
            return [], [], f"metrics.csv line {n} has {len(cells)} of its {len(columns)} cells"
        row = {}
        for column, cell in zip(columns, cells, strict=True):
            try:
                row[column] = float(cell) if cell.strip() else math.nan
            except ValueError:
                return [], [], f"metrics.csv line {n}: {column} {cell!r} is not a number"
        if row["epoch"] != len(rows) + 1:
            return [], [], f"metrics.csv line {n} is epoch {_cell_text(row['epoch'])}, not {n - 1}"
        rows.append(row)
    return columns, rows, None


def _cell_text(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)


def _show(value: float) -> str:
    return "empty" if math.isnan(value) else repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_value(value: Any) -> float | None:
    """A stored metric: None for missing or NaN (not evaluated)."""
    return None if value is None or value != value else float(value)


def selected(rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The epoch the validation split selects (highest ``val_acc``, the earliest of ties) with its
    validation and test accuracy; None without a validation split. The test set never chooses."""
    scored = [r for r in rows if metric_value(r.get("val_acc")) is not None]
    if not scored:
        return None
    best = max(scored, key=lambda r: (r["val_acc"], -r["epoch"]))
    return {
        "epoch": int(best["epoch"]),
        "val_acc": float(best["val_acc"]),
        "test_acc": metric_value(best.get("test_acc")),
    }


def objective(summary: Mapping[str, Any], by: str = "final") -> float:
    """A trial's score: its validation accuracy at the final epoch (``by="final"``) or at the
    epoch validation selects (``"best"``); 0 for a diverged run; NaN for a run that did not
    finish (pruned, failed, interrupted: never ranked)."""
    if summary.get("status") == "diverged":
        return 0.0
    if summary.get("status") != "finished":
        return math.nan
    if by == "best":
        chosen = summary.get("selected") or {}
        value = chosen.get("val_acc")
    else:
        value = (summary.get("final") or {}).get("val_acc")
    return math.nan if value is None else float(value)
