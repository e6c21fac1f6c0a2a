"""DRSOM's constructor arguments checked in one pass, each refused in one ``DRSOM: ...`` line.

:func:`check` takes every argument, in the order the constructor has always refused them (a call
with several bad values names the same one as before), and returns what the constructor keeps:
the three parts and the ratio-test policy. Their factories refuse their own names and
combinations, so they are built inside the pass, at the place where those values are checked.
The value rules are the suite's shared checks (:mod:`drsom.cfg.checks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from drsom.cfg.checks import DRSOM, NON_NEGATIVE, UNIT, in_unit, integer, one_of, real, unit_pair
from drsom.cfg.checks import is_non_negative as _non_negative
from drsom.cfg.checks import positive as _positive

from .control import Controller, make_controller
from .curvature import Curvature, make_curvature
from .directions import Directions, make_directions
from .ratio_test import RatioTest, make_ratio_test

# how radius and step bound measure a step s: |s| (the seed's form) or |s| / sqrt(n)
STEP_MEASURES = ("euclidean", "rms")

# the largest seed torch.Generator.manual_seed takes
MAX_SEED = 2**64 - 1


class Checked(NamedTuple):
    """What the constructor keeps of its arguments besides the param-group values."""

    directions: Directions
    curvature: Curvature
    controller: Controller
    ratio_test: RatioTest
    radius: float  # the initial trust radius: ``radius``, else ``lr``


def check(a: Mapping[str, Any]) -> Checked:
    """Every constructor argument of DRSOM (``a``: by name, ``params`` aside), or one line."""
    betas = _check_shared(a)
    radius = a["radius"] if a["radius"] is not None else a["lr"]
    dirs = make_directions(
        a["directions"], history=a["history"], ema=a["momentum_ema"], betas=betas, eps=a["eps"]
    )
    curv = make_curvature(
        a["hessian"], betas=betas, eps=a["eps"], interp_step=a["interp_step"], lr_h=a["lr_h"]
    )
    ctrl = make_controller(
        a["subproblem"],
        radius=radius,
        gamma=a["gamma"],
        sigma=a["sigma"],
        radius_rule=a["radius_rule"],
        follow_schedule=a["follow_schedule"],
    )
    _check_step(a)
    _check_reduce(a["reduce"])
    test = make_ratio_test(
        a["ratio_test"], period=a["test_period"], spike=a["spike"], subproblem=a["subproblem"]
    )
    return Checked(dirs, curv, ctrl, test, radius)


def _real(name: str, value: Any, accepted: str, ok) -> None:
    real(name, value, accepted, ok, prefix=DRSOM)


def _open_unit(v: float) -> bool:
    return 0.0 < v < 1.0


def _check_shared(a: Mapping[str, Any]) -> tuple[float, float]:
    """The values the parts take too; returns ``betas`` as floats."""
    betas = unit_pair("betas", a["betas"], "a pair of numbers in [0, 1)", prefix=DRSOM)
    _positive("eps", a["eps"], prefix=DRSOM)
    _real("momentum_ema", a["momentum_ema"], UNIT, in_unit)
    one_of("step_measure", a["step_measure"], STEP_MEASURES, prefix=DRSOM)
    return betas


def _check_step(a: Mapping[str, Any]) -> None:
    """The step bound, the trials, the radius and radius-free rules, the L2 weight."""
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
    # eps was checked with the shared values
    for name in ("gamma", "gamma_min", "gamma_fail_min", "sigma_min", "interp_step"):
        _positive(name, a[name], prefix=DRSOM)
    _check_floor("gamma", a["gamma"], a["gamma_min"])
    if a["sigma"] is not None:
        _positive("sigma", a["sigma"], prefix=DRSOM)
        _check_floor("sigma", a["sigma"], a["sigma_min"])
    for name in ("gamma_inc", "gamma_dec"):
        _real(name, a[name], "a finite number > 1", lambda v: 1.0 < v < math.inf)
    _real("weight_decay", a["weight_decay"], NON_NEGATIVE, _non_negative)
    if a["rank_tol"] is not None:
        _real("rank_tol", a["rank_tol"], "a number in (0, 1)", _open_unit)


def _check_floor(name: str, value: float, floor: float) -> None:
    """A radius-free weight (gamma, sigma) at or above its floor (``<name>_min``)."""
    if floor > value:
        raise ValueError(
            f"DRSOM: {name}_min (the floor of {name}) must be <= {name}, got "
            f"{name}_min={floor!r} > {name}={value!r}"
        )


def _check_reduce(reduce: Any) -> None:
    if reduce is not None and not callable(reduce):
        raise ValueError(
            f"DRSOM: reduce must be a callable averaging a tensor across processes "
            f"(drsom.optim.distributed.mean_over()) or None, got {reduce!r}"
        )
