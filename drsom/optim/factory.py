"""One entry point for every optimizer of the suite: ``build(name, params, **cfg)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from drsom.optim.baselines import BASELINE_NAMES, build_baseline
from drsom.optim.protocol import STEP_CLOSURE, STEP_PROTOCOLS, step_protocol

__all__ = ["OPTIMIZER_NAMES", "STEP_CLOSURE", "STEP_PROTOCOLS", "build", "step_protocol"]

OPTIMIZER_NAMES: tuple[str, ...] = ("drsom", *BASELINE_NAMES)


def build(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict], **cfg: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of ``OPTIMIZER_NAMES``) over ``params`` with keywords ``cfg``.

    Raises ``ValueError`` for an unknown name or keyword. ``drsom.optim.protocol`` says how to
    step the result, what a step costs and what it reports.
    """
    if name == "drsom":
        # Imported here so the baselines work without the DRSOM module and its import cost.
        import inspect

        from drsom.optim.drsom import DRSOM

        accepted = [p for p in inspect.signature(DRSOM).parameters if p != "params"]
        unknown = sorted(set(cfg) - {*accepted, "preset"})
        if unknown:
            raise ValueError(
                f"unknown keyword argument {unknown[0]!r} for optimizer 'drsom'; accepted values: "
                f"preset, {', '.join(accepted)}"
            )
        preset = cfg.pop("preset", None)
        return DRSOM.preset(preset, params, **cfg) if preset else DRSOM(params, **cfg)
    if not isinstance(name, str) or name not in OPTIMIZER_NAMES:
        raise ValueError(
            f"unknown optimizer name={name!r}; accepted values: {', '.join(OPTIMIZER_NAMES)}"
        )
    return build_baseline(name, params, **cfg)
