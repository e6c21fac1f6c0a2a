"""DRSOM's constructor arguments checked, each refused in one ``DRSOM: ...`` line.

Two passes, in the order the constructor has always refused them: ``check_shared`` before the
three parts are built (the values they take too), ``check_step`` after (the ratio test's, the
radius-free rules', the step bound's). The rules themselves are the suite's shared checks
(:mod:`drsom.cfg.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from drsom.cfg.checks import DRSOM, NON_NEGATIVE, UNIT, in_unit, integer, one_of, real, unit_pair
from drsom.cfg.checks import is_non_negative as _non_negative
from drsom.cfg.checks import positive as _positive

# how radius and step bound measure a step s: |s| (the seed's form) or |s| / sqrt(n)
STEP_MEASURES = ("euclidean", "rms")

# the largest seed torch.Generator.manual_seed takes
MAX_SEED = 2**64 - 1


def _real(name: str, value: Any, accepted: str, ok) -> None:
    real(name, value, accepted, ok, prefix=DRSOM)


def _open_unit(v: float) -> bool:
    return 0.0 < v < 1.0


def check_shared(a: Mapping[str, Any]) -> tuple[float, float]:
    """The values the parts take too; returns ``betas`` as floats."""
    betas = unit_pair("betas", a["betas"], "a pair of numbers in [0, 1)", prefix=DRSOM)
    _positive("eps", a["eps"], prefix=DRSOM)
    _real("momentum_ema", a["momentum_ema"], UNIT, in_unit)
    one_of("step_measure", a["step_measure"], STEP_MEASURES, prefix=DRSOM)
    return betas


def check_step(a: Mapping[str, Any]) -> None:
    """The step bound, the ratio test, the radius and radius-free rules, the L2 weight."""
    _positive("lr", a["lr"], prefix=DRSOM)
    if a["radius"] is not None:
        _positive("radius", a["radius"], prefix=DRSOM)
    integer("history", a["history"], prefix=DRSOM)
    integer("max_trials", a["max_trials"], prefix=DRSOM)
    seed_range = f"an integer >= 0 and <= {MAX_SEED}"
    integer("seed", a["seed"], low=0, high=MAX_SEED, accepted=seed_range, prefix=DRSOM)
    zeta1 = a["zeta1"]
    _real("eta", a["eta"], UNIT, in_unit)
    _real("zeta1", zeta1, "a number in (0, 1)", _open_unit)
    _real("zeta2", a["zeta2"], f"a number in [zeta1={zeta1}, 1)", lambda v: zeta1 <= v < 1.0)
    _real("shrink", a["shrink"], "a number in (0, 1)", _open_unit)
    _real("expand", a["expand"], "a finite number >= 1", lambda v: 1.0 <= v < math.inf)
    for name in ("gamma", "gamma_min", "gamma_fail_min", "sigma_min", "eps", "interp_step"):
        _positive(name, a[name], prefix=DRSOM)
    gamma, gamma_min, sigma, sigma_min = a["gamma"], a["gamma_min"], a["sigma"], a["sigma_min"]
    if gamma_min > gamma:
        raise ValueError(
            f"DRSOM: gamma_min (the floor of gamma) must be <= gamma, got "
            f"gamma_min={gamma_min!r} > gamma={gamma!r}"
        )
    if sigma is not None:
        _positive("sigma", sigma, prefix=DRSOM)
        if sigma_min > sigma:
            raise ValueError(
                f"DRSOM: sigma_min (the floor of sigma) must be <= sigma, got "
                f"sigma_min={sigma_min!r} > sigma={sigma!r}"
            )
    for name in ("gamma_inc", "gamma_dec"):
        _real(name, a[name], "a finite number > 1", lambda v: 1.0 < v < math.inf)
    _real("weight_decay", a["weight_decay"], NON_NEGATIVE, _non_negative)
    if a["rank_tol"] is not None:
        _real("rank_tol", a["rank_tol"], "a number in (0, 1)", _open_unit)
