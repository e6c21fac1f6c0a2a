"""The options the analysis tools share, declared once: where the store and the published curves
are, which experiments, their targets and cost weights, and whether broken runs may be left out.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from drsom.analysis.report import OpenStore, Refused, open_store

COST_WEIGHTS_HELP = (
    "oracle weights per model (default: cost_weights.json beside --results; measured by "
    "scripts/bench_optimizers.py --oracle-weights)"
)
REFERENCE_HELP = (
    "published curves, long format (model, optimizer, epoch, train_acc, test_acc in %%)"
)


def refusals(main: Callable[..., int]) -> Callable[..., int]:
    """A tool's ``main`` whose ``Refused`` (``drsom.analysis.report``) is its line on stderr and
    its exit status."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
        try:
            return main(argv, base_dir=base_dir)
        except Refused as refused:
            print(refused, file=sys.stderr)
            return refused.status

    return wrapped


def store_parser(doc: str, base: Path, *, broken: str) -> argparse.ArgumentParser:
    """A tool's parser (described by the first paragraph of its ``doc``) with ``store_options``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    store_options(p, base, broken=broken)
    return p


def store_options(p: argparse.ArgumentParser, base: Path, *, broken: str) -> None:
    """``--results``, ``--experiment``, ``--cost-weights`` and ``--allow-broken`` (``broken``:
    what the tool does with broken runs when allowed)."""
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--experiment", action="append", help="experiments/<NAME>.yaml (repeatable)")
    p.add_argument("--cost-weights", type=Path, help=COST_WEIGHTS_HELP)
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help=f"{broken} (default: stop before anything is written, naming them)",
    )


def target_options(p: argparse.ArgumentParser) -> None:
    """``--targets`` and ``--targets-file`` (``drsom.analysis.accuracy_targets``)."""
    p.add_argument(
        "--targets",
        nargs="+",
        help="target test accuracies of every experiment, percent in (1, 100) or fractions in "
        "(0, 1) (default: each experiment's own, declared in its experiment file, else in "
        "--targets-file, else 0.90 0.93)",
    )
    p.add_argument(
        "--targets-file",
        type=Path,
        help="targets of experiments without their own (default: targets.json beside --results)",
    )


def opened(args: argparse.Namespace, **checks) -> OpenStore:
    """The store of ``args`` opened and checked once (``drsom.analysis.report.open_store``)."""
    return open_store(
        args.results,
        args.experiment,
        targets=getattr(args, "targets", None),
        targets_file=getattr(args, "targets_file", None),
        cost_weights=args.cost_weights,
        reference=getattr(args, "reference", None),
        allow_broken=args.allow_broken,
        **checks,
    )
