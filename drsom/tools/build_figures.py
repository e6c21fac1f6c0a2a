"""Every figure and table from a run store, replaced all at once: what ``make figures`` runs.

    drsom-figures [--results results/runs] [--figures results/figures]
        [--tables results/tables] [--reference ../shared/reference/adabelief_cifar10_curves.csv]

Everything is drawn into a temporary folder beside the outputs first (per-epoch curves of all four
metrics, test accuracy against time and against gradient evaluations, then the tables). Only when
every step succeeded do the new folders take the place of the old ones, so a failure (a wrong
``--reference``, a broken run store, a full disk) leaves the committed figures and tables as they
were, and nothing stale survives a success.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from drsom.analysis.runs import load_reference
from drsom.tools import make_tables, plot_curves

# (x axis, metrics); None: every metric
FIGURE_SETS = (("epoch", None), ("time", ["test_acc"]), ("grad_evals", ["test_acc"]))


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    if args.reference is not None:
        try:  # checked before anything is drawn: a wrong path costs nothing
            load_reference(args.reference)
        except (OSError, ValueError) as exc:
            print(f"error: --reference {args.reference}: {exc}", file=sys.stderr)
            return 2
    parent = args.figures.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".figures-", dir=parent) as tmp:
        figures, tables = Path(tmp) / "figures", Path(tmp) / "tables"
        for x, metrics in FIGURE_SETS:
            cmd = ["--results", str(args.results), "--out", str(figures), "--x", x]
            cmd += ["--metrics", *metrics] if metrics else []
            cmd += ["--reference", str(args.reference)] if args.reference else []
            if plot_curves.main(cmd) != 0:
                print("error: figures not replaced (see above)", file=sys.stderr)
                return 1
        if make_tables.main(["--results", str(args.results), "--out", str(tables)]) != 0:
            print("error: figures and tables not replaced (see above)", file=sys.stderr)
            return 1
        figures.mkdir(exist_ok=True)  # an empty store still gets (empty) folders
        _replace(args.figures, figures)
        _replace(args.tables, tables)
    print(f"replaced {args.figures} and {args.tables}")
    return 0


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
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
