r"""When DRSOM pays for its ratio test: every step (the seed's), every k-th, or adaptively.

The ratio test prices a trial point with one more forward on the step's mini-batch. On CIFAR
images it almost never rejects (4 of 9,440 steps needed a second trial, the radius at its bound):
the trust region then acts as a step-length cap, and the forward buys nothing. A policy decides,
before each step, whether the step is *tested* (the trial loop as always) or *untested* (the
first proposal is taken unseen: no forward). An untested step is still a trust-region step,
``|s| <= Delta`` with ``Delta`` the radius that the last tested steps validated, so the policies
serve the trust-region subproblem only (the radius-free ones have no radius that bounds an
untested step).

What catches a bad untested step, within a bounded number of steps:

* **the guard** (every policy but ``always``). The next step's gradient forward evaluates
  ``f_{t+1}(x_{t+1})`` anyway; before its backward, the loss is compared with a non-monotone
  reference, the largest step-start loss of the last ``period`` steps (Grippo, Lampariello and
  Lucidi 1986; Toint 1997 accepts against a reference of past values in the same spirit):

  .. math::
      f_{t+1}(x_{t+1}) \le f_{ref} + \text{spike}\,\max(|f_{ref}|, 10^{-12}),\quad
      f_{ref} = \max_{t-\text{period} < j \le t} f_j(x_j).

  A loss above it, or not finite, undoes the untested step (``x <- x - s``, the direction memory
  reset, the radius shrunk as after a rejection: ``shrink * min(Delta, |s|)``), the closure is
  rewound (BatchNorm's running statistics back to before the bad forward) and evaluated again at
  the restored point (one forward more, on this failure only), and the step that follows is
  tested. A NaN never reaches the gradient, the moving averages or BatchNorm's statistics.
* **the next tested step**, at most ``period`` steps later, whose trials shrink the radius as
  always when the model over-promises.

Policies (``ratio_test``; ``test_period`` = k):

* ``always``: every step tested (the seed's DRSOM, bitwise unchanged).
* ``periodic``: steps 0, k, 2k, ... tested, and every step after a failure (a rejected trial or a
  guard undo).
* ``adaptive``: test; after a tested step accepted at its first trial with the radius at the step
  bound (the test changed nothing: the trust region was only a cap), the interval to the next test
  doubles, up to k; after any other tested step, or a guard undo, the next step is tested again.
  So the test is skipped only while it keeps proving idle, and the radius still shrinks after
  failures and grows back (a tested step is due whenever the radius sits below the bound).

What an untested step gives up: the same-batch guarantee ``f(x+) < f(x) - eta * pred`` of that
step, and radius growth on it (rho is unknown). A step that over-promises by a factor short of the
spike margin stands until the next tested step shrinks the radius; a noisy batch can trip the
guard and undo a good step (one forward and a shorter radius lost). Under ``always`` no guard runs
and nothing changes.
"""

from __future__ import annotations

import math
from collections import deque

from drsom.cfg.checks import DRSOM, integer, one_of, real

__all__ = ["RATIO_TESTS", "RatioTest", "make_ratio_test"]

RATIO_TESTS = ("always", "periodic", "adaptive")

_TINY = 1e-12


class RatioTest:
    """The policy's schedule, the guard's reference and the untested step awaiting its check.

    ``due()`` says whether this step is tested; ``after_tested`` / ``after_untested`` advance the
    schedule; ``guard(loss)`` judges the loss at the start of the step after an untested one.
    """

    def __init__(self, name: str, period: int, spike: float):
        self.name, self.longest, self.spike = name, period, spike
        self.interval = period if name == "periodic" else 1  # steps from one test to the next
        self.wait = 0  # untested steps left before the next test
        self.pending = False  # the last step was untested and its successor has not judged it
        self.recent: deque[float] = deque(maxlen=period)  # step-start losses: the reference

    @property
    def always(self) -> bool:
        return self.name == "always"

    def due(self) -> bool:
        return self.always or self.wait == 0

    def seen(self, loss: float) -> None:
        """The step-start loss of a step (its mini-batch at its starting point)."""
        if not self.always and math.isfinite(loss):
            self.recent.append(loss)

    def guard(self, loss: float) -> bool:
        """True when the loss after an untested step stays under the reference (keep the step)."""
        self.pending = False
        if not math.isfinite(loss):
            return False
        if not self.recent:
            return True
        ref = max(self.recent)
        return loss <= ref + self.spike * max(abs(ref), _TINY)

    def failed(self) -> None:
        """A rejected trial or a guard undo: the next step is tested."""
        if self.name == "adaptive":
            self.interval = 1
        self.wait = 0

    def after_tested(self, first_accepted: bool, at_bound: bool) -> None:
        if self.always:
            return
        if not first_accepted:
            self.failed()
            return
        if self.name == "adaptive":
            self.interval = min(2 * self.interval, self.longest) if at_bound else 1
        self.wait = self.interval - 1

    def after_untested(self, moved: bool) -> None:
        self.wait = max(self.wait - 1, 0)
        self.pending = moved

    def state_dict(self) -> dict:
        return {
            "interval": self.interval,
            "wait": self.wait,
            "pending": self.pending,
            "recent": list(self.recent),
        }

    def load_state_dict(self, s: dict) -> None:
        self.interval, self.wait = int(s["interval"]), int(s["wait"])
        self.pending = bool(s["pending"])
        self.recent = deque((float(v) for v in s["recent"]), maxlen=self.longest)


def make_ratio_test(name: str, *, period: int, spike: float, subproblem: str) -> RatioTest:
    """The policy ``name`` (one of :data:`RATIO_TESTS`); bad values are refused in one line."""
    one_of("ratio_test", name, RATIO_TESTS, prefix=DRSOM)
    integer("test_period", period, low=1, accepted="an integer >= 1", prefix=DRSOM)
    real("spike", spike, "a finite number > 0", lambda v: 0.0 < v < math.inf, prefix=DRSOM)
    if name != "always" and subproblem != "trust_region":
        raise ValueError(
            f"DRSOM: ratio_test={name!r} takes untested steps bounded by the trust radius; "
            f"subproblem={subproblem!r} has no radius (use subproblem='trust_region' or "
            f"ratio_test='always')"
        )
    return RatioTest(name, period, spike)
