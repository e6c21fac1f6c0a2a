"""Pick each optimizer's best trial of a tuning experiment, and write it as an optimizer config.

    drsom select --experiment tune_digits_cnn   # (scripts/select_tuned.py in a checkout)
    python run.py -m experiment=digits_tuned_cnn 'hydra.searchpath=[file://results/selected]'

How trials are scored and ranked, and what is written under ``--out`` (default
``results/selected``, beside the store), all or nothing: ``drsom.analysis.tuned``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsom.analysis.report import to_stderr
from drsom.analysis.runs import load_store
from drsom.analysis.tuned import BY, select, selection_markdown, write_selection
from drsom.store.folder import describe_os_error
from drsom.store.study import STUDIES


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    args = parse_args(argv, base_dir or Path.cwd())
    store = load_store(args.results, report=to_stderr)
    try:
        studies_dir = args.results.parent / STUDIES
        table, configs = select(
            store, args.experiment, args.by, studies_dir=studies_dir, allow_broken=args.allow_broken
        )
    except ValueError as exc:
        print(f"error: {exc}; the selection in {args.out} is left as it was", file=sys.stderr)
        return 2
    text = selection_markdown(table, args.experiment, args.by)
    try:
        folder = write_selection(args.out, args.experiment, configs, table, text)
    except OSError as exc:
        why = describe_os_error(exc) if exc.errno else str(exc)
        print(
            f"error: cannot write the selection into {args.out}: {why}; the selection there is "
            "left as it was",
            file=sys.stderr,
        )
        return 2
    print(text)
    print(f"wrote {len(configs)} optimizer configs to {folder}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None, base: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="the tuning experiment's name")
    p.add_argument("--results", type=Path, default=base / "results" / "runs", help="run store")
    p.add_argument("--out", type=Path, default=base / "results" / "selected")
    p.add_argument("--by", choices=BY, default="final", help="validation accuracy at: (default)")
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help="select from the readable trials when some are broken (each named on stderr; the "
        "selection table counts them); without it a broken trial stops the selection",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
