"""Each experiment's target test accuracies: the "to reach X%" columns and performance profiles.

A target says when a workload counts as solved, so it belongs to the workload (as AlgoPerf keeps
its targets with each workload): 93% is a fair bar for the digits CNN and out of reach for a
15-epoch CNN on a third of CIFAR-10. An experiment file, this suite's workload, declares its
targets in its ``study`` node, before the final runs are made::

    study:
      targets: [0.60, 0.65]   # test accuracy: the "to reach" columns and performance profiles

An experiment without a file of its own (runs exported from wandb under another study name) may
take them from ``targets.json`` beside the run store (``results/targets.json`` for
``results/runs``, as ``cost_weights.json``)::

    {"my_study": [0.60, 0.65]}

and one without either gets the tools' default, 0.90 and 0.93; targets given on the command line
(``--targets``) apply to every experiment. Values follow ``--targets``: fractions in (0, 1) or
percent in (1, 100). ``Targets.of`` is the one place the sources meet, for the tables and the
figures alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drsom.analysis.stats import check_targets
from drsom.analysis.tables import DEFAULT_TARGETS
from drsom.cfg import experiments

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


@dataclass(frozen=True)
class Targets:
    """Where each experiment's targets come from: ``forced`` (the command line) over the
    experiment file's ``study.targets`` over ``declared`` (the file at ``path``) over
    ``default``."""

    path: Path
    declared: dict[str, tuple[float, ...]]
    forced: tuple[float, ...] | None = None
    default: tuple[float, ...] = DEFAULT_TARGETS

    @classmethod
    def resolve(
        cls,
        results_dir: str | Path,
        targets: Sequence[float] | None = None,
        targets_file: str | Path | None = None,
    ) -> Targets:
        """The tools' ``--targets`` and ``--targets-file`` for the store ``results_dir``; either
        one that is not valid is one ValueError line."""
        path = Path(targets_file) if targets_file else default_path(results_dir)
        forced = check_targets(targets) if targets else None  # 93 and 0.93 both mean 93%
        return cls(path=path, declared=load_targets(path), forced=forced)

    def of(self, experiment: str) -> tuple[float, ...]:
        """``experiment``'s targets, as fractions; ValueError (one line naming the file) for an
        experiment file whose ``study.targets`` is not a list of accuracies."""
        if self.forced:
            return self.forced
        own = experiments.study_of(experiment).get("targets")
        if own is None:
            return self.declared.get(experiment, self.default)
        try:
            if not isinstance(own, list) or not own:
                raise ValueError(f"expected a list of accuracies, got {own!r}")
            return check_targets(own)
        except ValueError as exc:
            where = experiments.EXPERIMENT_DIR / f"{experiment}.yaml"
            raise ValueError(f"{where}: study.targets: {' '.join(str(exc).split())}") from None
