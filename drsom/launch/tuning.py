"""Tuning on the validation split: a declared budget of trials per optimizer, one study each.

``hydra/sweeper=tuning`` is the suite's optuna sweeper (``drsom.launch.tuning_sweeper``: ask and
tell, a seeded TPE sampler by default, the study stored beside the runs by ``drsom.store.study``)
with these rules, checked before any trial trains:

* the budget ``hydra.sweeper.n_trials`` is a positive integer;
* the search space is not empty: ``configs/search/<optimizer>.yaml`` (one file beside each optimizer
  config, for the optimizer the launch chose), with sweep overrides of the command line
  (``optimizer.lr='tag(log, interval(1e-3, 1))'``) added or overriding; every key is a key of the
  run's config, every range holds a value (``interval(low, high)`` with low < high, and low > 0
  under ``tag(log, ...)``; ``range`` and ``choice`` with at least one value);
* the run has a validation split (``data.val_size`` > 0): trials are ranked on it, never on the
  test set.

A bad one is one line and exit status 2. Each trial is an ordinary run of the results store
(its own run id, resumed or skipped like any other). What a trial reports to the sampler is
``objective``: the validation accuracy at the final epoch (``objective: final``, the default: the
schedule is part of what is tuned), or at the epoch validation selects (``objective: best``); a
diverged run scores 0; a pruned, failed or interrupted one has no score. ``drsom-select`` ranks the
stored trials the same way.

This module is light (no optuna): a trial's job imports it to score itself.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from omegaconf import DictConfig, OmegaConf

from drsom.cfg.experiments import TUNING_SWEEPER

SWEEPER = TUNING_SWEEPER
OBJECTIVES = ("final", "best")
ACCEPTED_RANGES = (
    "interval(low, high) with low < high, tag(log, interval(low, high)) with 0 < low < high, "
    "range(start, stop[, step]) or choice(a, b, ...) with at least one value"
)


class TuningError(ValueError):
    """A tuning launch that must not start (one line)."""


def tuning_objective() -> str | None:
    """``final`` or ``best`` inside a trial of a tuning sweep; None in any other job."""
    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    return sweeper.get("objective", "final") if sweeper.get("_target_") == SWEEPER else None


def trial_result(summary: Mapping[str, Any], by: str) -> dict[str, Any]:
    """What a trial's job hands the sweeper: its run's status, score and trained epochs."""
    from drsom.store.state import objective  # the store's reader imports torch: in the job only

    score = objective(summary, by)
    return {
        "status": summary.get("status"),
        "score": None if math.isnan(score) else score,
        "epochs": summary.get("epoch") or 0,
        "run_id": summary.get("run_id"),
    }


def check_budget(n_trials: Any) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise TuningError(
            f"hydra.sweeper.n_trials={n_trials!r}: the tuning budget must be a positive number "
            "of trials"
        )


def check_search_space(params: list[Override], job: DictConfig) -> None:
    """Every swept key is one of the run's config, and every range holds a value."""
    swept = [p for p in params if p.is_sweep_override()]
    if not swept:
        raise TuningError(
            "no search space: give the optimizer a configs/search/<optimizer>.yaml, or "
            f"key=interval(...) overrides (accepted: {ACCEPTED_RANGES})"
        )
    missing = object()
    for p in swept:
        key = p.get_key_element()
        if OmegaConf.select(job, key, default=missing) is missing:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(job, parent) if parent else job
            keys = node.keys() if isinstance(node, DictConfig) else []
            have = sorted(str(k) for k in keys if not str(k).startswith("_"))
            raise TuningError(
                f"search space: {key} is not a key of this run's config"
                + (f" ({parent} has: {', '.join(have)})" if have else "")
            )
        _check_range(key, p)


def _check_range(key: str, p: Override) -> None:
    value, text = p.value(), f"search space: {p.input_line}"
    if isinstance(value, IntervalSweep):
        if not value.start < value.end:
            raise TuningError(f"{text} is an empty range (accepted: {ACCEPTED_RANGES})")
        if "log" in value.tags and value.start <= 0:
            raise TuningError(f"{text}: a log range needs 0 < low (accepted: {ACCEPTED_RANGES})")
    elif isinstance(value, RangeSweep | ChoiceSweep) and not list(p.sweep_iterator()):
        raise TuningError(f"{text} holds no value (accepted: {ACCEPTED_RANGES})")


def check_validation_split(job: DictConfig) -> None:
    from drsom.data import validation_count

    val_size = OmegaConf.select(job, "data.val_size", default=0.1)
    if validation_count(val_size, sys.maxsize) == 0:
        raise TuningError(
            f"data.val_size={val_size!r}: tuning ranks trials on the validation split, and this "
            "leaves none (accepted: a count >= 1 or a fraction in (0, 1))"
        )
