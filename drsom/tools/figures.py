"""Every figure and table from a run store, replaced all at once: what ``make figures`` runs.

    drsom figures [--results results/runs] [--figures results/figures]
        [--tables results/tables] [--reference ../shared/reference/adabelief_cifar10_curves.csv]
        [--cost-weights results/cost_weights.json] [--experiment NAME ...] [--targets 90 93]
        [--targets-file FILE]

The curves (per epoch, against time, against gradient equivalents), the tables, the performance
profiles and the tuning studies' plots, from the store read once; the new folders take the place
of the old ones only when all of it is drawn, so a failure leaves the committed figures and
tables as they were and a success leaves nothing stale (``drsom.analysis.build``). A broken run
of the selection stops the build before anything is replaced unless ``--allow-broken`` (then the
tables and captions name what was left out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis.build import build_all
from drsom.analysis.runs import readable
from drsom.tools.options import REFERENCE_HELP, opened, refusals, store_parser, target_options


@refusals
def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    store = opened(args, need_runs=False, broken_then="; nothing replaced")
    if not readable(store.store):  # an empty or unreadable store never empties the folders
        print(f"error: no readable runs in {args.results}", file=sys.stderr)
        print("error: figures not replaced (see above)", file=sys.stderr)
        return 1
    build_all(store, args.figures, args.tables)
    print(f"replaced {args.figures} and {args.tables}")
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = store_parser(
        __doc__,
        base,
        broken="build when runs of the selection are broken: they are left out and named in "
        "the tables and captions",
    )
    p.add_argument("--figures", type=Path, default=base / "results" / "figures")
    p.add_argument("--tables", type=Path, default=base / "results" / "tables")
    p.add_argument("--reference", type=Path, help=REFERENCE_HELP)
    target_options(p)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
