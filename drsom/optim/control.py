"""Step-size controllers: how the radius (or its radius-free stand-in) follows the ratio test.

Each controller proposes a solution of the reduced model and adapts itself to the ratio
rho = actual / predicted decrease. Every proposal respects the step bound ``bound`` (the param
group's ``lr``): it is the trust-region radius cap, and for the radius-free forms a hard cap on
the step length, so learning-rate schedules act on every subproblem the same way.

After a rejection the next proposal is strictly shorter than the rejected one; otherwise a trial
could repeat itself (an interior Newton point does not move when only the radius shrinks).

A controller owns its state: ``start`` prepares it for a step's model (the cubic weight is
balanced on the first model it sees), ``state_dict``/``load_state_dict`` save and restore it, and
``diagnostics`` reports it under its own name (``radius``, ``gamma`` or ``sigma``).
"""

from __future__ import annotations

from drsom.cfg.checks import DRSOM, one_of

from .subproblem import ReducedModel, Solution

__all__ = ["CONTROLLERS", "RADIUS_RULES", "make_controller"]

_TINY = 1e-30


class Controller:
    """Base class of the step-size controllers (see the module doc)."""

    def start(self, model: ReducedModel, radius: float, bound: float | None = None) -> None:
        """Called once per step with the step's model and step bound, before the first proposal."""

    def propose(self, model: ReducedModel, bound: float, hp: dict, scale: float) -> Solution:
        raise NotImplementedError

    def update(self, model, sol: Solution, rho: float, accepted: bool, bound: float, hp, scale):
        raise NotImplementedError

    @property
    def value(self) -> float | None:
        """The adapted parameter (radius, gamma or sigma)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float | None]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, s: dict) -> None:
        raise NotImplementedError


RADIUS_RULES = ("seed", "good", "last_step")


class TrustRegion(Controller):
    """min m(alpha) s.t. |alpha|_G <= radius; shrink on failure, expand by the radius rule.

    Every rule shrinks to ``shrink * min(radius, |step|)`` on a rejection or when rho < zeta1.
    They differ on the other steps:

    * ``seed``: expand by ``expand`` only on a boundary step with rho > zeta2 (the paper's rule).
      When rho settles in (zeta1, zeta2), as on mini-batches, the radius never grows again.
    * ``good``: expand by ``expand`` on every accepted step with rho >= zeta1, so the radius
      climbs to the step bound unless the model keeps failing.
    * ``last_step``: after such a step the radius is ``expand * |step|``: it follows the
      steps actually taken (interior ones included), up to the bound.

    ``follow_schedule``: when the step bound changes (an lr schedule), the radius is scaled by
    the same factor, so a decay acts on a radius that sits below the bound.
    """

    def __init__(self, radius: float, rule: str = "seed", follow_schedule: bool = False):
        self.radius = radius
        self.rule, self.follow_schedule = rule, follow_schedule
        self.last_bound: float | None = None  # the bound of the previous step

    @property
    def value(self) -> float:
        return self.radius

    def diagnostics(self) -> dict[str, float]:
        return {"radius": self.radius}

    def start(self, model: ReducedModel, radius: float, bound: float | None = None) -> None:
        if self.follow_schedule and bound is not None:
            if self.last_bound is not None and bound != self.last_bound:
                self.radius *= bound / self.last_bound
            self.last_bound = bound

    def propose(self, model: ReducedModel, bound: float, hp: dict, scale: float) -> Solution:
        self.radius = min(self.radius, bound)
        return model.trust_region(self.radius)

    def shrink(self, norm: float, hp: dict) -> None:
        """After a failed step of length ``norm``: ``shrink * min(radius, norm)``."""
        self.radius = max(hp["shrink"] * min(self.radius, norm), _TINY)

    def update(self, model, sol: Solution, rho: float, accepted: bool, bound: float, hp, scale):
        if not accepted or rho < hp["zeta1"]:
            self.shrink(sol.norm, hp)
        elif self.rule == "good":
            self.radius = min(hp["expand"] * self.radius, bound)
        elif self.rule == "last_step":
            self.radius = min(max(hp["expand"] * sol.norm, _TINY), bound)
        elif rho > hp["zeta2"] and sol.boundary:
            self.radius = min(hp["expand"] * self.radius, bound)

    def state_dict(self):
        return {"radius": self.radius, "last_bound": self.last_bound}

    def load_state_dict(self, s):
        self.radius = float(s["radius"])
        last = s.get("last_bound")  # absent in state saved before follow_schedule existed
        self.last_bound = None if last is None else float(last)


class _Shortening(Controller):
    """Shared logic of the radius-free controllers: a smaller parameter p gives longer steps."""

    name = ""

    def __init__(self, value: float | None):
        self.p = value

    @property
    def value(self) -> float | None:
        return self.p

    def diagnostics(self) -> dict[str, float | None]:
        return {self.name: self.p}

    def _solve(self, model, p):
        raise NotImplementedError

    def _floor(self, hp, scale):
        raise NotImplementedError

    def propose(self, model, bound, hp, scale):
        sol = self._solve(model, max(self.p, self._floor(hp, scale)))
        return model.trust_region(bound) if sol.norm > bound else sol

    def _increase(self, p, hp):
        raise NotImplementedError

    def _decrease(self, p, hp):
        raise NotImplementedError

    def update(self, model, sol, rho, accepted, bound, hp, scale):
        if not accepted or rho <= hp["zeta1"]:
            self.p = self._increase(self.p, hp)
            if not accepted:
                for _ in range(100):
                    if self._solve(model, self.p).norm < sol.norm * (1 - 1e-9) or sol.norm == 0:
                        break
                    self.p = self._increase(self.p, hp)
        elif rho >= hp["zeta2"]:
            self.p = max(self._floor(hp, scale), self._decrease(self.p, hp))

    def state_dict(self):
        return {self.name: self.p}

    def load_state_dict(self, s):
        # None: the cubic weight was not balanced yet (saved before the first step)
        self.p = None if s[self.name] is None else float(s[self.name])


class Regularized(_Shortening):
    """Radius-free: lam = lb + gamma * span (the official code's rule), gamma adapted by rho.

    Failure: gamma <- max(gamma * gamma_inc, gamma_fail_min); a very good step:
    gamma <- max(gamma_min / scale, gamma / gamma_dec), where scale = lr / lr0 lets a
    learning-rate schedule raise the floor (smaller steps) as it decays lr.
    """

    name = "gamma"

    def _solve(self, model, p):
        return model.regularized(p)

    def _floor(self, hp, scale):
        return hp["gamma_min"] / scale

    def _increase(self, p, hp):
        return max(p * hp["gamma_inc"], hp["gamma_fail_min"])

    def _decrease(self, p, hp):
        return p / hp["gamma_dec"]


class Cubic(_Shortening):
    """min m(alpha) + sigma/3 |alpha|_G^3; sigma grows by 1/shrink on failure, falls by expand."""

    name = "sigma"

    def _solve(self, model, p):
        return model.cubic(p)

    def _floor(self, hp, scale):
        return hp["sigma_min"] / scale

    def _increase(self, p, hp):
        return p / hp["shrink"]

    def _decrease(self, p, hp):
        return p / hp["expand"]

    def start(self, model: ReducedModel, radius: float, bound: float | None = None) -> None:
        # sigma |alpha|^2 = |c| at |alpha| = radius: the cubic term balances the slope there.
        if self.p is None:
            cn = float((model.chat**2).sum() ** 0.5)
            self.p = cn / radius**2 if cn > 0 else 1.0


# name -> constructor from DRSOM's keywords (each controller takes what it uses)
_CONTROLLERS = {
    "trust_region": lambda radius, gamma, sigma, rule, follow: TrustRegion(radius, rule, follow),
    "regularized": lambda radius, gamma, sigma, rule, follow: Regularized(gamma),
    "cubic": lambda radius, gamma, sigma, rule, follow: Cubic(sigma),
}

CONTROLLERS = tuple(_CONTROLLERS)


def make_controller(
    name: str,
    *,
    radius: float,
    gamma: float,
    sigma: float | None,
    radius_rule: str = "seed",
    follow_schedule: bool = False,
) -> Controller:
    """The controller of subproblem ``name`` (one of :data:`CONTROLLERS`); others are refused.

    ``radius_rule`` (:data:`RADIUS_RULES`) and ``follow_schedule`` shape the trust region's
    radius; the radius-free subproblems have no radius, so they refuse anything but the defaults.
    """
    one_of("subproblem", name, CONTROLLERS, prefix=DRSOM)
    one_of("radius_rule", radius_rule, RADIUS_RULES, prefix=DRSOM)
    if not isinstance(follow_schedule, bool):
        raise ValueError(f"DRSOM: follow_schedule must be true or false, got {follow_schedule!r}")
    if name != "trust_region" and (radius_rule != "seed" or follow_schedule):
        raise ValueError(
            f"DRSOM: radius_rule and follow_schedule shape the trust radius; subproblem={name!r} "
            f"has none (use subproblem='trust_region', or radius_rule='seed' and "
            f"follow_schedule=false)"
        )
    return _CONTROLLERS[name](
        radius=radius, gamma=gamma, sigma=sigma, rule=radius_rule, follow=follow_schedule
    )
