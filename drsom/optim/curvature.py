"""Curvature sources: where DRSOM's k x k matrix Q = V H V^T comes from.

Each source returns Q for the data loss (the closure's loss) on the active directions, as a
device tensor; the optimizer adds the L2 term ``w G`` itself, so weight decay is treated the same
way whatever the source. Sources that evaluate the model move the parameters through the
``Probe`` the optimizer passes in, which counts every closure call and gradient.

======== ============================================================ ==========================
name     Q_ij                                                          extra cost per step
======== ============================================================ ==========================
hvp      v_i^T (H v_j), H v_j by double backward                       k Hessian-vector products
fd       v_i^T (grad f(x + t_j v_j) - g) / t_j, symmetrised             k gradients
interp   fitted to f(x + a_i v_i [+ a_j v_j]) - f(x) - c^T alpha         k(k+1)/2 forwards
adam     v_i^T diag(sqrt(v_hat) + eps) v_j / lr_h, v = EMA of g^2       none
adabelief v_i^T diag(sqrt(s_hat) + eps) v_j / lr_h, s = EMA of (g-m)^2   none
======== ============================================================ ==========================

``lr_h`` puts the diagonal sources on the scale of a curvature: Adam's own update
``lr m_hat / (sqrt(v_hat) + eps)`` is the Newton step of ``H = diag(sqrt(v_hat) + eps) / lr``, so
``lr_h`` plays Adam's learning rate (1, the seed's form, prices steps ~1000x too high for
networks that Adam trains at 1e-3).

A source owns its state: ``state_dict``/``load_state_dict`` save and restore it, ``reset`` forgets
it (DRSOM's restart after a non-finite gradient), ``diagnostics`` reports it. Per-element state
(the diagonal sources' moving averages) is laid out like the optimizer's flat parameter buffer;
``per_element``/``set_per_element`` hand it to the optimizer, which re-lays it out when it re-packs
the parameters.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from drsom.cfg.checks import DRSOM, one_of

from .flat import FlatParams

__all__ = ["HESSIANS", "Probe", "check_loss", "make_curvature", "phase"]


def phase(name: str):
    """A torch.profiler label (scripts/profile_hvp_step.py); costs nothing unprofiled."""
    return torch.profiler.record_function(f"drsom::{name}")


def check_loss(loss) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = type(loss).__name__ if not isinstance(loss, torch.Tensor) else tuple(loss.shape)
        raise ValueError(
            f"DRSOM: closure() must return the mini-batch loss as a scalar tensor, got {got}"
        )
    return loss.reshape(())


class Probe:
    """What curvature sources may do with the model: move x, evaluate, differentiate.

    ``opt`` is the optimizer (its flat buffer ``_flat``, parameters and views), ``closure`` the
    step's closure, ``counts`` the step's oracle counts, ``grads`` the gradient with its graph
    (``hessian="hvp"``), ``loss0`` the loss at x and ``bound`` the step bound as a Euclidean
    length. What it measures on the closure's mini-batch (values, gradient and HVP dots) comes
    back averaged over the processes of a data-parallel run (the optimizer's ``_reduce``).
    """

    def __init__(self, opt: FlatParams, closure, counts: Counter, grads, loss0, bound):
        self.opt, self.closure, self.counts = opt, closure, counts
        self.x = opt._flat
        self.grads = grads
        self.loss0 = loss0
        self.step_bound = bound

    def move(self, row: torch.Tensor, coef) -> None:
        if isinstance(coef, torch.Tensor):
            self.x.addcmul_(row, coef)
        else:
            self.x.add_(row, alpha=coef)

    def value(self) -> torch.Tensor:
        with torch.no_grad():
            loss = check_loss(self.closure()).detach()
        self.counts["forward"] += 1
        self.opt._reduce(loss)
        return loss

    @phase("dots")
    def _dots(self, pieces, R: torch.Tensor) -> torch.Tensor:
        scratch = torch.zeros_like(self.x)
        views = self.opt._views(scratch)
        keep = [(v, t) for v, t in zip(views, pieces, strict=True) if t is not None]
        if keep:
            torch._foreach_copy_([v for v, _ in keep], [t.detach() for _, t in keep])
        dots = R @ scratch
        self.opt._reduce(dots)
        return dots

    def gradient_dots(self, R: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            loss = check_loss(self.closure())
            grads = torch.autograd.grad(loss, self.opt._params, allow_unused=True)
        self.counts["forward"] += 1
        self.counts["grad"] += 1
        return self._dots(grads, R)

    def hvp_dots(self, R: torch.Tensor, i: int, last: bool) -> torch.Tensor:
        params = self.opt._params
        live = [j for j, g in enumerate(self.grads) if g is not None and g.requires_grad]
        out = [None] * len(params)
        if live:
            row = self.opt._views(R[i])
            with torch.enable_grad(), phase("hvp"):
                hv = torch.autograd.grad(
                    [self.grads[j] for j in live],
                    params,
                    grad_outputs=[row[j] for j in live],
                    retain_graph=not last,
                    allow_unused=True,
                )
            out = list(hv)
        self.counts["hvp"] += 1
        return self._dots(out, R)


def _symmetrize(Q: torch.Tensor) -> torch.Tensor:
    return 0.5 * (Q + Q.T)


class Curvature:
    """Base class: a source without state (every Q comes from the current point only)."""

    needs_graph = False  # whether the gradient must keep its graph (double backward)
    evaluates = False  # whether the source calls the closure (then BatchNorm hygiene matters)

    def gram(self, R: torch.Tensor) -> torch.Tensor:
        """G = R R^T, called once per step after row 0 (the gradient, L2 included) is set."""
        return R @ R.T

    def quadratic(self, probe, R: torch.Tensor, c_data: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_element(self) -> dict[str, torch.Tensor]:
        """Flat per-element state, one buffer-sized tensor per name (none here)."""
        return {}

    def set_per_element(self, buffers: dict[str, torch.Tensor]) -> None:
        """Take over the re-laid-out per-element state (the names of :meth:`per_element`)."""

    def reset(self) -> None:
        """Forget what was learnt from past steps."""

    def diagnostics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, like: torch.Tensor) -> None:
        """Restore :meth:`state_dict`; tensors move to the dtype and device of ``like``."""


class ExactHVP(Curvature):
    """Hessian-vector products by differentiating <g(x), v> once more."""

    needs_graph = True

    def quadratic(self, probe, R, c_data):
        cols = [probe.hvp_dots(R, i, last=i == R.shape[0] - 1) for i in range(R.shape[0])]
        return _symmetrize(torch.stack(cols, dim=1))


class FiniteDifference(Curvature):
    """H v ~ (grad f(x + t v) - grad f(x)) / t, the seed's formula.

    The step ``t |v| = sqrt(eps) (1 + |x|)`` balances truncation against cancellation in the
    difference of gradients: about 3e-4 (1 + |x|) in float32. A fixed t = 1e-8 (the official code)
    is below float32 resolution and returns noise.
    """

    evaluates = True

    def quadratic(self, probe, R, c_data):
        eps = torch.finfo(R.dtype).eps
        reach = math.sqrt(eps) * (1.0 + torch.linalg.vector_norm(probe.x))
        lengths = torch.linalg.vector_norm(R, dim=1)
        cols = []
        for i in range(R.shape[0]):
            t = reach / lengths[i]
            probe.move(R[i], t)
            dots = probe.gradient_dots(R)
            probe.move(R[i], -t)
            cols.append((dots - c_data) / t)
        return _symmetrize(torch.stack(cols, dim=1))


class Interpolation(Curvature):
    """Q fitted to forward-only function values, exact for quadratics, any k.

    Points ``a_i v_i`` (k of them) give the diagonal, ``a_i v_i + a_j v_j`` (k(k-1)/2) the
    off-diagonal; a_i = tau / |v_i| puts every point at distance tau (or tau sqrt(2)) from x.
    tau (``interp_step``, at most the step bound) trades two errors: a quadratic fitted over a
    wide region of a network's loss is not its local curvature (tau = the trust radius, 0.25-1,
    trained a small CNN far worse than tau = 0.01 on the digits data), while the second
    differences of f lose ~ 4 eps |f| / tau^2 to round-off (1e-2 of a unit curvature in float32).
    """

    evaluates = True

    def __init__(self, step: float = 1e-2):
        self.step = step
        self.tau = math.nan  # the distance used by the last step

    def diagnostics(self) -> dict[str, float]:
        return {"interp_step": self.tau}

    def quadratic(self, probe, R, c_data):
        k = R.shape[0]
        tau = self.tau = min(self.step, probe.step_bound)
        a = tau / torch.linalg.vector_norm(R, dim=1)
        f0 = probe.loss0
        diag = [None] * k
        off = {}
        for i in range(k):
            probe.move(R[i], a[i])
            diag[i] = probe.value()
            for j in range(i + 1, k):
                probe.move(R[j], a[j])
                off[i, j] = probe.value()
                probe.move(R[j], -a[j])
            probe.move(R[i], -a[i])
        # r_i = f(point) - f0 - c^T alpha: the second-order part of the change
        Q = torch.zeros(k, k, dtype=R.dtype, device=R.device)
        for i in range(k):
            Q[i, i] = 2.0 * (diag[i] - f0 - a[i] * c_data[i]) / a[i] ** 2
        for (i, j), fij in off.items():
            rest = fij - f0 - a[i] * c_data[i] - a[j] * c_data[j]
            rest = rest - 0.5 * (a[i] ** 2 * Q[i, i] + a[j] ** 2 * Q[j, j])
            Q[i, j] = Q[j, i] = rest / (a[i] * a[j])
        return Q


class _Diagonal(Curvature):
    """H = diag(h): Q = (V * h) V^T with no model evaluation.

    The moving averages, G and Q are computed in one pass over the parameters, in chunks that
    stay in cache: g, the directions and the averages are each read once, as an Adam update
    reads them, and no parameter-sized temporary is made.
    """

    chunk = 1 << 18

    def __init__(self, betas=(0.9, 0.999), eps=1e-8, lr_h=1.0):
        self.betas, self.eps, self.lr_h = betas, eps, lr_h
        self.t = 0
        self.buffers: dict[str, torch.Tensor] = {}
        self._Q: torch.Tensor | None = None

    def _h(self, g: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Update the averages on elements a:b with gradient chunk g; return h there."""
        raise NotImplementedError

    def gram(self, R):
        for name in self.names:
            if name not in self.buffers:
                self.buffers[name] = torch.zeros_like(R[0])
        self.t += 1
        k, n = R.shape
        G = R.new_zeros(k, k)
        Q = R.new_zeros(k, k)
        for a in range(0, n, self.chunk):
            Rc = R[:, a : a + self.chunk]
            h = self._h(Rc[0], a, a + Rc.shape[1])
            G.addmm_(Rc, Rc.T)
            Q.addmm_(Rc * h, Rc.T)
        self._Q = _symmetrize(Q) / self.lr_h
        return G

    def quadratic(self, probe, R, c_data):
        return self._Q

    def per_element(self) -> dict[str, torch.Tensor]:
        return self.buffers

    def set_per_element(self, buffers: dict[str, torch.Tensor]) -> None:
        self.buffers = buffers

    def reset(self) -> None:
        for buf in self.buffers.values():
            buf.zero_()
        self.t = 0

    def state_dict(self) -> dict:
        return {"t": self.t, **self.buffers}

    def load_state_dict(self, state: dict, like: torch.Tensor) -> None:
        state = dict(state)
        self.t = int(state.pop("t"))
        # copies: the loaded state must not share storage with the dict it came from
        self.buffers = {name: buf.to(like, copy=True) for name, buf in state.items()}


class AdamDiagonal(_Diagonal):
    """H = diag(sqrt(v_hat) + eps), v <- b2 v + (1 - b2) g^2, v_hat = v / (1 - b2^t)."""

    names = ("exp_avg_sq",)

    def _h(self, g, a, b):
        b2 = self.betas[1]
        v = self.buffers["exp_avg_sq"][a:b]
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        return (v / (1.0 - b2**self.t)).sqrt_().add_(self.eps)


class AdaBeliefDiagonal(_Diagonal):
    """H = diag(sqrt(s_hat) + eps), m <- b1 m + (1 - b1) g, s <- b2 s + (1 - b2)(g - m)^2 + eps."""

    names = ("exp_avg", "exp_avg_var")

    def _h(self, g, a, b):
        b1, b2 = self.betas
        m, s = self.buffers["exp_avg"][a:b], self.buffers["exp_avg_var"][a:b]
        m.mul_(b1).add_(g, alpha=1.0 - b1)
        diff = g - m
        s.mul_(b2).addcmul_(diff, diff, value=1.0 - b2).add_(self.eps)
        return (s / (1.0 - b2**self.t)).sqrt_().add_(self.eps)


# name -> constructor from DRSOM's keywords (each source takes what it uses)
_SOURCES = {
    "hvp": lambda betas, eps, interp_step, lr_h: ExactHVP(),
    "fd": lambda betas, eps, interp_step, lr_h: FiniteDifference(),
    "interp": lambda betas, eps, interp_step, lr_h: Interpolation(interp_step),
    "adam": lambda betas, eps, interp_step, lr_h: AdamDiagonal(betas, eps, lr_h),
    "adabelief": lambda betas, eps, interp_step, lr_h: AdaBeliefDiagonal(betas, eps, lr_h),
}

HESSIANS = tuple(_SOURCES)
DIAGONAL_HESSIANS = ("adam", "adabelief")


def make_curvature(name: str, *, betas, eps, interp_step, lr_h: float = 1.0) -> Curvature:
    """The curvature source ``name`` (one of :data:`HESSIANS`); any other name is refused.

    ``lr_h`` (a positive number) scales the diagonal sources only; the others measure the
    curvature itself, so they refuse any value but 1.
    """
    one_of("hessian", name, HESSIANS, prefix=DRSOM)
    if isinstance(lr_h, bool) or not isinstance(lr_h, (int, float)) or not 0 < lr_h < math.inf:
        raise ValueError(f"DRSOM: lr_h must be a positive finite number, got {lr_h!r}")
    if lr_h != 1 and name not in DIAGONAL_HESSIANS:
        raise ValueError(
            f"DRSOM: lr_h scales the diagonal curvature (hessian='adam' or 'adabelief'); "
            f"hessian={name!r} measures the curvature itself, so lr_h must be 1, got {lr_h!r}"
        )
    return _SOURCES[name](betas=betas, eps=eps, interp_step=interp_step, lr_h=float(lr_h))
