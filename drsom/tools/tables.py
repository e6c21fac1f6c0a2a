"""A results table per experiment, in Markdown (to read), CSV (to compute with) and LaTeX.

    drsom tables --results results/runs --out results/tables
    drsom tables --experiment digits_drsom_vs_baselines_cnn --targets 0.95 0.97

Per variant: the final and validation-selected test accuracy, the final validation and
(evaluation-mode) train accuracy, and the cost to reach each target test accuracy (the
experiment's own, declared in its experiment file; else ``--targets``), with 95% confidence
intervals over the seeds and the paired differences to the ``--baseline``; then the selection of
each tuning study behind the settings. What each file holds: ``drsom.analysis.table_files``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis.table_files import write_tables
from drsom.tools.options import opened, refusals, store_parser, target_options


@refusals
def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    write_tables(opened(args), args.out, args.baseline)
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = store_parser(
        __doc__,
        base,
        broken="make the tables when runs of the selection are broken: they are left out, "
        "counted as unfinished and named in each table's notes",
    )
    p.add_argument("--out", type=Path, default=base / "results" / "tables")
    target_options(p)
    p.add_argument(
        "--baseline",
        help="optimizer label the others are compared with, seed by seed (default: the "
        "experiment file's study.baseline, else adam)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
