"""Direction providers: which directions besides the gradient span DRSOM's subspace.

All providers work on the direction matrix ``R`` (k x n, one flat row per direction) owned by the
optimizer. Row 0 always holds the gradient g; the subspace is span{g, rows 1..k-1} (without g for
``preconditioned_only``, whose g only prices the model; rows past the directions may hold a
provider's per-element state, e.g. a second moment). Signs and
scales of rows do not matter (the subproblem is posed in the Gram metric), so the paper's
``-g`` and ``g / |g|`` are the same subspace as ``g``.

A provider is told three things per step: ``prepare`` (fill its rows for this step), ``accept``
(the step ``s = R^T alpha`` was accepted) and ``reset`` (every trial failed: forget the memory,
the CG-style restart). ``active`` says how many leading rows carry a direction this step, so rows
that were never filled cost nothing.

The rows themselves live in the optimizer's matrix (row 0, the gradient, is ``p.grad``'s storage,
and all rows are re-laid out with the parameters), which saves them; a provider keeps, saves and
loads its own bookkeeping (``state_dict``/``load_state_dict``) and reports ``diagnostics``.
"""

from __future__ import annotations

import torch

from drsom.cfg.checks import DRSOM, one_of

__all__ = [
    "DIRECTIONS",
    "Directions",
    "GradientOnly",
    "History",
    "Momentum",
    "Preconditioned",
    "RandomDirection",
    "make_directions",
]


def _write_step(target: torch.Tensor, R: torch.Tensor, alpha, own: int) -> None:
    """target <- sum_i alpha_i R_i in place, where ``target`` is row ``own`` of R (no temporary)."""
    target.mul_(alpha[own])
    for i, a in enumerate(alpha):
        if i != own and a != 0.0:
            target.add_(R[i], alpha=a)


def _momentum(alpha, k: int, rows: int, own: int, ema: float) -> list[float]:
    """Coefficients over the first ``rows`` rows of the new momentum row ``own``: the step
    ``s = sum alpha_i R_i`` (its first ``k`` rows active), or with ``ema = b`` the average
    ``b d + (1 - b) s`` = ``(1 - b) alpha_i`` for the others and ``b + (1 - b) alpha_own``."""
    a = [float(v) for v in alpha[:k]] + [0.0] * (rows - k)
    if ema:
        a = [(1.0 - ema) * v for v in a]
        a[own] = ema + a[own]
    return a


class Directions:
    """Base class; subclasses set ``rows`` (number of rows besides the gradient).

    ``state_rows``: further rows of R after the directions, which hold a provider's per-element
    state (laid out, re-packed and saved with the directions, never part of the subspace).
    ``with_gradient = False``: the gradient (row 0) prices the model (c = V g) but is left out of
    the subspace.
    """

    rows = 0
    state_rows = 0
    with_gradient = True

    def __init__(self):
        self.filled = 0  # rows 1..filled carry a direction

    def active(self) -> int:
        return 1 + self.filled

    def prepare(self, R: torch.Tensor, generator: torch.Generator | None) -> None:
        pass

    def accept(self, R: torch.Tensor, alpha) -> None:
        pass

    def reset(self, R: torch.Tensor) -> None:
        pass

    def diagnostics(self) -> dict[str, float]:
        """``memory``: the directions kept besides the gradient."""
        return {"memory": float(self.filled)}

    def state_dict(self) -> dict:
        return {"filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        self.filled = int(state["filled"])


class GradientOnly(Directions):
    """V = [-g]: steepest descent with the step length chosen by the curvature model."""


class Momentum(Directions):
    """V = [-g, d], d the last accepted step (or an EMA of accepted steps).

    ``ema = b`` keeps d <- b d + (1 - b) s (the official code uses b = 0.3); b = 0 is the plain
    last step d = x_k - x_{k-1}.
    """

    rows = 1

    def __init__(self, ema: float = 0.0):
        super().__init__()
        self.ema = ema

    def accept(self, R, alpha) -> None:
        _write_step(R[1], R, _momentum(alpha, self.active(), 2, 1, self.ema), own=1)
        self.filled = 1

    def reset(self, R) -> None:
        R[1].zero_()
        self.filled = 0


class History(Directions):
    """V = [-g, d_k, ..., d_{k-m+1}]: the last m accepted steps, kept in a ring of rows.

    Rows are filled in order 1, 2, ..., m after a reset, so the filled rows are always a prefix
    while the ring warms up; once full, the oldest row is overwritten.
    """

    def __init__(self, m: int):
        super().__init__()
        self.rows = m
        self.next = 1

    def accept(self, R, alpha) -> None:
        a = [float(v) for v in alpha] + [0.0] * (1 + self.rows - len(alpha))
        _write_step(R[self.next], R, a, own=self.next)
        self.filled = min(self.filled + 1, self.rows)
        self.next = self.next % self.rows + 1

    def reset(self, R) -> None:
        R[1:].zero_()
        self.filled = 0
        self.next = 1

    def state_dict(self) -> dict:
        return {"filled": self.filled, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        self.filled, self.next = int(state["filled"]), int(state["next"])


class RandomDirection(Directions):
    """V = [-g/|g|, u], u ~ N(0, I - g g^T/|g|^2): a Gaussian with its g component removed.

    Drawn from the optimizer's own generator, so runs repeat and resume exactly.
    """

    rows = 1

    def __init__(self):
        super().__init__()
        self.filled = 1

    def prepare(self, R, generator) -> None:
        g, u = R[0], R[1]
        u.normal_(generator=generator)
        # u <- u - (u.g / g.g) g, with the coefficient kept on the device (no host sync)
        gg = torch.dot(g, g)
        coef = torch.where(gg > 0, torch.dot(u, g) / gg, torch.zeros_like(gg))
        u.addcmul_(g, coef, value=-1.0)

    def load_state_dict(self, state: dict) -> None:
        self.filled = 1


class Preconditioned(Directions):
    """V = [-g, -P m_hat, d]: Adam's update direction among the candidates.

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2`` (bias-corrected ``m_hat``,
    ``v_hat``), ``P = diag(1 / (sqrt(v_hat) + eps))``; ``d`` is the momentum direction of
    :class:`Momentum` (the last accepted step, or its EMA). DRSOM chooses its step within
    span{g, P m_hat, d} by the second-order model; with the diagonal curvature
    ``diag(sqrt(v_hat) + eps) / lr_h`` and ``b1 = 0`` the model's minimiser along ``P g`` alone is
    Adam's step ``lr_h P g`` (and on the first step for any b1, as m_hat = g there).
    ``with_gradient=False`` (``directions="preconditioned_only"``) leaves the raw gradient out:
    V = [-P m_hat, d]. The moments m and v are rows 3 and 4 of R, so they are re-packed and saved
    with the directions; a restart keeps them unless they are not finite.
    """

    rows = 2
    state_rows = 2

    def __init__(self, ema: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8, gradient=True):
        super().__init__()
        self.ema, (self.b1, self.b2), self.eps = ema, betas, eps
        self.with_gradient = gradient
        self.t = 0

    def active(self) -> int:
        return 2 + self.filled

    def prepare(self, R, generator) -> None:
        g, p, m, v = R[0], R[1], R[3], R[4]
        self.t += 1
        m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
        v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
        # p <- m_hat / (sqrt(v_hat) + eps), in place (no parameter-sized temporary)
        p.copy_(v).div_(1.0 - self.b2**self.t).sqrt_().add_(self.eps)
        torch.div(m, p, out=p).div_(1.0 - self.b1**self.t)

    def accept(self, R, alpha) -> None:
        _write_step(R[2], R[:3], _momentum(alpha, self.active(), 3, 2, self.ema), own=2)
        self.filled = 1

    def reset(self, R) -> None:
        R[2].zero_()
        self.filled = 0
        if not bool(torch.isfinite(R[3:5]).all()):  # after a non-finite gradient: start afresh
            R[3:5].zero_()
            self.t = 0

    def diagnostics(self) -> dict[str, float]:
        return {"memory": float(self.filled)}

    def state_dict(self) -> dict:
        return {"filled": self.filled, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.filled, self.t = int(state["filled"]), int(state["t"])


# name -> constructor from DRSOM's keywords (each provider takes what it uses)
_PROVIDERS = {
    "gradient": lambda history, ema, betas, eps: GradientOnly(),
    "momentum": lambda history, ema, betas, eps: Momentum(ema),
    "history": lambda history, ema, betas, eps: History(history),
    "random": lambda history, ema, betas, eps: RandomDirection(),
    "preconditioned": lambda history, ema, betas, eps: Preconditioned(ema, betas, eps),
    "preconditioned_only": lambda history, ema, betas, eps: Preconditioned(
        ema, betas, eps, gradient=False
    ),
}

DIRECTIONS = tuple(_PROVIDERS)


def make_directions(
    name: str, *, history: int, ema: float, betas=(0.9, 0.999), eps: float = 1e-8
) -> Directions:
    """The direction provider ``name`` (one of :data:`DIRECTIONS`); any other name is refused."""
    one_of("directions", name, DIRECTIONS, prefix=DRSOM)
    return _PROVIDERS[name](history=history, ema=ema, betas=betas, eps=eps)
