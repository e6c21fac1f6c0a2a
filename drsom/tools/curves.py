"""Accuracy and loss curves of an experiment's runs, one figure per model and metric.

    drsom curves --results results/runs --out results/figures
    drsom curves --experiment digits_drsom_vs_baselines_cnn --x time
    drsom curves --x grad_equiv --cost-weights results/cost_weights.json --preset column
    drsom curves --experiment adabelief_protocol_resnet34 \\
        --reference ../shared/reference/adabelief_cifar10_curves.csv

Which runs belong to a figure is the experiment's grid (experiments/<NAME>.yaml, expanded as the
sweep expands it); without --experiment every experiment with runs in --results is drawn (a tuning
study's trials are ranked by its tables instead). A line per optimizer is the mean over its seeds,
with a band (±1 std; min-max for 2 seeds). Files: ``<out>/<experiment>/<model>-<metric>-<x>.png``
and ``.pdf`` (``drsom.analysis.curves``).

``--x grad_equiv``: the cost in gradient equivalents (``drsom.analysis.costs``), with each
model's weights from ``--cost-weights`` (default: ``cost_weights.json`` beside the run store),
printed under the title with where they were measured; a model without weights is left out, said
in one line. ``--x time``: the title says the machine and whether the runs had it alone.
``--preset column|full``: the paper's sizes (``drsom.analysis.paper.PRESETS``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis import costs, figures, paper
from drsom.analysis.curves import METRICS, draw_curves, drawable
from drsom.tools.options import REFERENCE_HELP, opened, refusals, store_parser


@refusals
def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    grad_equiv = args.x == "grad_equiv"
    store = opened(args, need_weights=grad_equiv, need_targets=False, drawn_only=True)
    if store.unweighed:  # their figures have no axis to be drawn on: left out, said once
        print(costs.missing_line(store.unweighed, store.weights_path), file=sys.stderr)
    weights = store.weights if grad_equiv else None
    shown = drawable(store, store.selections)  # already the drawn ones (drawn_only)
    for path in draw_curves(
        shown, args.out, args.x, args.metrics, store.reference, weights, args.preset
    ):
        print(path)
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = store_parser(
        __doc__,
        base,
        broken="draw when runs of the selection are broken: they are left out, and the legend "
        "and caption name them",
    )
    p.add_argument("--out", type=Path, default=base / "results" / "figures")
    p.add_argument("--x", choices=tuple(figures.X_AXES), default="epoch")
    p.add_argument("--metrics", nargs="+", choices=tuple(figures.METRICS), default=list(METRICS))
    p.add_argument("--reference", type=Path, help=REFERENCE_HELP)
    p.add_argument("--preset", choices=tuple(paper.PRESETS), help="paper size (3.3 / 6.75 in)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
