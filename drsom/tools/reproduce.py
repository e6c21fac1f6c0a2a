"""Rerun a stored run from its stored config and say whether it reproduces, column by column.

    drsom-reproduce results/runs/<run_id> [--epochs N] [--keep DIR]

The run's ``config.yaml`` is trained again, into a temporary store (``--keep``: that folder, kept),
for all its epochs or the first ``N`` (``trainer.stop_after_epochs``: the schedule stays the one of
the full run, so the first N epochs are the same computation), with the CPU thread count the run
recorded. A rerun that read other data than the stored run (its ``data_fingerprint`` differs:
what ``data.root`` holds changed) is said first, as the reason its numbers differ. Then every
column of
``metrics.csv`` and ``steps.csv`` is compared with the stored one, wall-clock columns excluded:
``identical``, or the first row that differs with both values. Floats are compared as stored
(full precision), so "identical" means bit for bit. The commit that made the stored run and the
current one are printed with it, and whether the two are the same code: the same commit with the
same uncommitted edits (``git_diff_sha``) or none. Identical numbers from other code (a run made
in a dirty tree, rerun on the clean commit) are said to be that, never plain "identical".

The stored run is read by the store's one reader (``drsom.store.state``) first: a config.yaml that
no longer hashes to the folder's run id (edited) or a damaged metrics.csv is one line, and so is
an ``--epochs`` outside 1 to the stored epochs.

Exit status: 0 when everything compared is identical, 1 when something differs, 2 for a folder
that holds no run, a broken one, or a rerun that cannot start.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from pathlib import Path

import torch

from drsom.job.record import git_state, machine
from drsom.store.folder import RunDir
from drsom.store.state import run_state
from drsom.training.loop import WALL_CLOCK_COLUMNS


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv)
    stored = RunDir(args.run)
    if not stored.config.exists() or not stored.metrics.exists():
        print(f"error: {args.run} holds no run (config.yaml and metrics.csv)", file=sys.stderr)
        return 2
    # the store's one reader: an edited config (no longer this run's id), a cut or edited
    # metrics.csv would make any comparison meaningless
    state = run_state(stored)
    if state.problem:
        print(f"error: {args.run}: {state.problem}", file=sys.stderr)
        return 2
    done = len(state.metrics)
    if args.epochs is not None and not 1 <= args.epochs <= done:
        print(
            f"error: --epochs {args.epochs}: run {stored.name} has {done} stored epoch(s) to "
            f"compare (accepted: 1 to {done})",
            file=sys.stderr,
        )
        return 2
    epochs = args.epochs or done
    config = state.config
    origin, other_code = provenance(state.summary)
    print(origin)
    threads = state.summary.get("threads")
    if isinstance(threads, int):  # CPU results depend on it: rerun with the stored count
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="reproduce-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        rerun = rerun_config(config, out, epochs)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from drsom.job.runner import USER_ERRORS, run

        try:
            status = run(rerun, base_dir=base_dir or Path.cwd())  # a relative data.root
        except USER_ERRORS as exc:  # e.g. data that is not there any more
            print(f"error: rerun of {stored.name}: {exc}", file=sys.stderr)
            return 2
        folder = out / stored.name  # the same config, so the same run id
        ran = len(read_rows(RunDir(folder).metrics))
        print(
            f"reran epochs 1-{ran} of the {done} stored of {stored.name} into {folder} ({status}); "
            f"compared: metrics.csv and steps.csv of those epochs, wall-clock columns excluded"
        )
        same = same_data(state.summary, RunDir(folder).read_summary() or {})
        for table in ("metrics", "steps"):
            same &= report(table, getattr(stored, table), getattr(RunDir(folder), table), epochs)
    print(verdict(same, other_code))
    return 0 if same else 1


def verdict(same: bool, other_code: str | None) -> str:
    """The last line: whether the numbers reproduced, and by which code."""
    if not same:
        return "NOT reproduced: see the differences above"
    if other_code:
        return f"reproduced: identical numbers, but NOT from the same code ({other_code})"
    return "reproduced: identical"


def same_data(stored: dict, rerun: dict) -> bool:
    """Whether the rerun read the data the stored run read (their ``data_fingerprint``); where
    not, one line naming it as the reason the numbers differ. True where either is unknown."""
    then, now = stored.get("data_fingerprint"), rerun.get("data_fingerprint")
    if not then or not now or then == now:
        return True
    print(
        f"data_fingerprint: {then} stored vs {now} rerun: the rerun read other data (images or "
        "labels) than the stored run, so its numbers are not expected to be the same"
    )
    return False


def rerun_config(config: dict, results: Path, epochs: int) -> dict:
    """The stored config, into ``results``, stopping after ``epochs``, without wandb."""
    c = {**config, "results_dir": str(results), "force": False}
    c["logger"] = {**c["logger"], "mode": "disabled"}
    c["trainer"] = {**c["trainer"], "progress": False}
    if epochs < c["trainer"]["epochs"]:
        c["trainer"]["stop_after_epochs"] = epochs
    return c


def provenance(summary: dict) -> tuple[str, str | None]:
    """The lines on the code and machine of the stored run (``summary``) and of this rerun, and
    why the two are not the same code (None when they are)."""
    current = git_state()
    other_code = code_difference(summary, current)
    same = f"NOT the same code: {other_code}" if other_code else "the same code"
    text = f"stored run made at {_code(summary)}; rerun at {_code(current)} ({same})"
    made_on, here = summary.get("machine"), machine()
    if isinstance(made_on, dict) and made_on != here:
        text += (
            f"\nstored run made on {made_on.get('cpu')} ({made_on.get('cpu_capability')}), "
            f"rerun on {here['cpu']} ({here['cpu_capability']}): float results differ between "
            "processors, so 'identical' is expected only on the same kind"
        )
    return text, other_code


def _code(state: dict) -> str:
    """``<commit>``, ``<commit> (dirty tree, diff <sha>)`` or why the commit is unknown."""
    commit = state.get("git_commit")
    if not commit:
        return f"an unknown commit ({state.get('code_origin') or 'none recorded'})"
    if state.get("git_dirty"):
        return f"{commit} (dirty tree, diff {state.get('git_diff_sha')})"
    return commit if state.get("git_dirty") is False else f"{commit} (dirty or not: unknown)"


def code_difference(stored: dict, current: dict) -> str | None:
    """Why the code of the rerun (``current``, a ``git_state``) is not the stored run's; None when
    it is: the same commit, and the same uncommitted edits (the same ``git_diff_sha``) or none."""
    made, now = stored.get("git_commit"), current.get("git_commit")
    if not made or not now:
        return "a commit is unknown, so the code cannot be compared"
    if made != now:
        return "OTHER commit"
    if stored.get("git_dirty") is None or current.get("git_dirty") is None:
        return "same commit, but whether its tree had uncommitted edits is unknown"
    edits = [
        (s.get("git_diff_sha") or "?") if s.get("git_dirty") else None for s in (stored, current)
    ]
    if "?" in edits:  # a dirty tree without the hash of its edits: nothing to compare
        return "same commit, but uncommitted edits whose hash was not recorded"
    if edits[0] == edits[1]:
        return None
    if edits[0] and edits[1]:
        return "same commit, other uncommitted edits"
    if edits[0]:
        return "same commit, but the stored run had uncommitted edits that this tree has not"
    return "same commit, but this tree has uncommitted edits that the stored run had not"


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report(table: str, stored_path: Path, new_path: Path, epochs: int) -> bool:
    """Print one line per column; True when every compared column is identical."""
    old, new = read_rows(stored_path), read_rows(new_path)
    old = [r for r in old if int(r["epoch"]) <= epochs]  # the epochs that were rerun
    if not old and not new:
        print(f"{table}.csv: absent in both")
        return True
    if len(old) != len(new):
        print(f"{table}.csv: {len(old)} stored rows vs {len(new)} rerun rows")
    columns = [c for c in (old or new)[0] if c not in WALL_CLOCK_COLUMNS]
    same = len(old) == len(new)
    for column in columns:
        first = next(
            (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a[column] != b[column]),
            None,
        )
        if first is None:
            print(f"{table}.csv {column}: identical")
            continue
        same = False
        a, b = old[first], new[first]
        where = f"epoch {a['epoch']}" + (f", step {a['step']}" if table == "steps" else "")
        values = f"{a[column]} stored vs {b[column]} rerun"
        print(f"{table}.csv {column}: first differs at row {first + 1} ({where}): {values}")
    return same


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder: <results_dir>/<run_id>")
    p.add_argument("--epochs", type=int, help="rerun only the first N epochs (default: all)")
    p.add_argument("--keep", type=Path, help="rerun into this folder and keep it")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
