"""The learning-rate schedule of a run, as config arithmetic: which epochs the step schedule
decays after (torch's scheduler is built from it in ``drsom.training.build``).

``trainer.lr_milestones`` entries are either epochs (integers, ``[150]``: x lr_gamma after epoch
150) or fractions of the run (floats in (0, 1), ``[0.75]``: after three quarters of
``trainer.epochs``, rounded to the nearest epoch, ties to even), so a protocol's "x0.1 at 3/4"
keeps its meaning when ``trainer.epochs`` changes. A milestone that could never act is not
silently kept: an epoch at or past the last one is refused; a fraction that rounds to no epoch
within the run is dropped with a one-line warning (a 1-epoch smoke run has no decay to make).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("drsom")

LR_SCHEDULES = ("step", "cosine", "constant")


def milestone_epochs(milestones: Any, epochs: int, *, warn: bool = False) -> list[int]:
    """The epochs after which the step schedule decays; ValueError (one line) for bad entries."""
    key = "trainer.lr_milestones"
    if not isinstance(milestones, Sequence) or isinstance(milestones, str):
        raise ValueError(f"{key} must be a list of epochs or fractions, got {milestones!r}")
    out = []
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m):
            raise ValueError(f"{key}: {m!r} is neither an epoch (integer) nor a fraction in (0, 1)")
        if isinstance(m, int):
            if not 1 <= m < epochs:
                raise ValueError(
                    f"{key}: epoch {m} is not within the run (1..{epochs - 1} for "
                    f"trainer.epochs={epochs}), so the lr would never decay there; give an "
                    f"epoch before the last or a fraction of the run such as 0.75"
                )
            out.append(m)
            continue
        if not 0 < m < 1:
            raise ValueError(f"{key}: {m!r} is neither an epoch (integer) nor a fraction in (0, 1)")
        epoch = round(m * epochs)
        if 1 <= epoch < epochs:
            out.append(epoch)
        elif warn:
            log.warning(
                f"{key}: {m:g} of {epochs} epoch(s) falls on no epoch before the last; no decay"
            )
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{key}={list(milestones)!r} must be increasing (epochs {out})")
    return out


def resolved_milestones(trainer: Mapping[str, Any]) -> list[int]:
    """The milestone epochs of a trainer config; [] unless its schedule is ``step``."""
    if trainer["lr_schedule"] != "step":
        return []
    return milestone_epochs(trainer["lr_milestones"], trainer["epochs"])


def describe_schedule(trainer: Mapping[str, Any]) -> str:
    """``lr ×0.1 after epoch 22`` / ``constant lr`` / ``cosine lr``: what ran, for titles."""
    if trainer["lr_schedule"] == "step":
        try:
            epochs = resolved_milestones(trainer)
        except ValueError:  # a run stored before milestones were checked
            n = trainer["epochs"]
            epochs = [m for m in trainer["lr_milestones"] if isinstance(m, int) and m < n]
        if not epochs:
            return "constant lr (no milestone within the run)"
        after = ", ".join(str(m) for m in epochs)
        return f"lr ×{trainer['lr_gamma']:g} after epoch {after}"
    return {"constant": "constant lr", "cosine": "cosine lr"}[trainer["lr_schedule"]]
