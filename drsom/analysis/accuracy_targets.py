"""Each experiment's target test accuracies: the "to reach X%" columns and performance profiles.

A target says when a workload counts as solved, so it belongs to the workload: 93% is a fair bar
for the digits CNN and out of reach for a 15-epoch CNN on a third of CIFAR-10. The targets of the
store's experiments are declared in ``targets.json`` beside the run store (``results/targets.json``
for ``results/runs``, as ``cost_weights.json``), before the final runs are made::

    {"cifar10_jpeg_cnn": [0.60, 0.65], "tune_cifar10_jpeg_cnn": [0.50, 0.55]}

An experiment without an entry gets the tools' ``--targets`` (default 0.90 and 0.93); targets
given on the command line apply to every experiment. Values follow ``--targets``: fractions in
(0, 1) or percent in (1, 100).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from drsom.analysis.stats import check_targets

TARGETS_FILE = "targets.json"


def default_path(results_dir: str | Path) -> Path:
    """The targets file beside the run store: ``results/runs`` -> ``results/targets.json``."""
    return Path(results_dir).resolve().parent / TARGETS_FILE


def load_targets(path: str | Path) -> dict[str, tuple[float, ...]]:
    """Per experiment, its targets as fractions; an absent file declares none. A file that is not
    an object of lists of accuracies is one ValueError line naming it."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
            raise ValueError("expected {experiment: [target, ...]}")
        return {name: check_targets(values) for name, values in raw.items()}
    except ValueError as exc:
        raise ValueError(f"targets {path}: {' '.join(str(exc).split())}") from None


def targets_of(
    experiment: str, declared: dict[str, tuple[float, ...]], default: Sequence[float]
) -> tuple[float, ...]:
    """``experiment``'s declared targets, else ``default`` (already checked)."""
    return declared.get(experiment, tuple(default))
