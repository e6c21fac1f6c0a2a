"""DRSOM: the Dimension-Reduced Second-Order Method as a ``torch.optim.Optimizer``.

The class docstring states the algorithm and the arguments (the rest of the user's guide is
docs/optimizer.md); below it are the constructor's state around the three parts (directions,
curvature source, step controller), ``step`` (solve, move, ratio test), the subspace model it
solves, what the optimizer protocol reads, and the state dict. Elsewhere: the flat parameter
buffer (``flat``), the argument checks that also build the parts (``arguments``), the parts
(``directions``, ``curvature``, ``control``) and the k x k solver (``subproblem``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch

from drsom.cfg.checks import DRSOM as _DRSOM_LINE
from drsom.cfg.checks import one_of

from . import arguments
from .arguments import STEP_MEASURES
from .curvature import Probe, check_loss, phase
from .distributed import no_reduce
from .flat import FlatParams, check_parameters, shares
from .protocol import ORACLES, STEP_CLOSURE
from .subproblem import ReducedModel

__all__ = ["DRSOM", "PRESETS", "STEP_MEASURES"]

# The official code's constants (COPT-Public/pydrsom, DRSOMF): eta 0.08, zeta 0.25/0.75,
# gamma x50 on failure (at least 1e-4), /30 on success, gamma0 1e-6, radius (step cap) 10,
# momentum as an EMA with weight 0.3 on the old direction, 15 trials, exact Hessian products.
PRESETS = {
    "clean": {},
    "official": dict(
        subproblem="regularized",
        hessian="hvp",
        lr=10.0,
        eta=0.08,
        zeta1=0.25,
        zeta2=0.75,
        gamma=1e-6,
        gamma_min=1e-8,
        gamma_inc=50.0,
        gamma_dec=30.0,
        gamma_fail_min=1e-4,
        momentum_ema=0.3,
        max_trials=15,
    ),
}

_COUNTS = ("steps", "accepted", "trials", *ORACLES)
# last_step's scalar entries that step_diagnostics reports (besides alpha and the parts' own);
# not "loss": the training loop logs the mini-batch loss itself (protocol.RESERVED_DIAGNOSTICS)
_DIAGNOSTICS = (
    *("accepted", "rho", "radius", "trials"),
    *("k", "pred", "actual", "step_norm", "lam"),
)


def _as_float(value) -> float:
    return math.nan if value is None else float(value)


class DRSOM(FlatParams):
    r"""Dimension-Reduced Second-Order Method (Zhang, Ge, Jiang, Ye 2022), for mini-batches.

    .. math::
        \begin{aligned}
        &g = \nabla f(x) + w x,\quad V = [v_1 = -g, v_2, \ldots, v_k]\quad(\text{directions})\\
        &c_i = \langle g, v_i\rangle,\quad G_{ij} = \langle v_i, v_j\rangle,\quad
          Q_{ij} = v_i^\top H v_j + w G_{ij},\quad
          m(\alpha) = c^\top\alpha + \tfrac12\alpha^\top Q\alpha \\
        &\textbf{for}\ \text{trial} = 1, \ldots, \text{max\_trials}: \\
        &\quad \alpha = \arg\min m(\alpha)\ \text{s.t.}\ \|\alpha\|_G \le \Delta
          \ (\text{trust\_region}),\ \ -(Q + \lambda G)^{-1}c,\ \lambda = \lambda_{lb}
          + \gamma\,\mathrm{span}\ (\text{regularized}),
          \ \ \arg\min m(\alpha) + \tfrac{\sigma}{3}\|\alpha\|_G^3\ (\text{cubic})\\
        &\quad \rho = \frac{f(x) - f(x + V^\top\alpha)}{-m(\alpha)}\ \text{(same mini-batch)};\quad
          \textbf{if}\ \rho > \eta:\ x \leftarrow x + V^\top\alpha,\ \textbf{stop};\
          \text{else shrink and retry} \\
        &\text{if every trial fails: reset the direction memory (restart)}
        \end{aligned}

    ``f`` is the closure's loss, ``w`` the group's weight decay (L2, in f, g and Q alike), ``Delta``
    the trust radius; the k x k matrices cost a few reductions over the parameters, and
    ``|alpha|_G = |V^T alpha|`` is the true length of the step (``step_measure="rms"``:
    ``|V^T alpha| / sqrt(n)``, i.e. ``G / n``). ``rho < zeta1`` shrinks the radius to
    ``shrink * min(radius, |step|)``; ``radius_rule`` says when it grows, never beyond the step
    bound ``lr``.

    Args:
        params: parameters or param groups; the trainable ones share one dtype (float32 or
            float64) and device, and are packed into one flat buffer that each ``p.data`` views.
        lr: the step bound, the largest step length ``|x+ - x|`` (the maximal trust radius; a cap
            for the radius-free subproblems); schedulers decay it; all param groups share it.
        hessian: where ``H v`` comes from: ``"hvp"`` (exact, double backward), ``"fd"`` (finite
            differences of gradients), ``"interp"`` (forward-only), ``"adam"`` or ``"adabelief"``.
        directions: ``v_2, ...``: ``"gradient"`` (none: k = 1), ``"momentum"``, ``"history"``,
            ``"random"``, ``"preconditioned"`` or ``"preconditioned_only"`` (without ``-g``).
        subproblem: ``"trust_region"``, ``"regularized"`` (radius-free, official) or ``"cubic"``.
        radius: initial trust radius (default ``lr``).
        history: number of past steps for ``directions="history"``.
        momentum_ema: ``d <- b d + (1 - b) s`` instead of ``d = s`` (official: 0.3).
        max_trials: trial points per step (each costs one forward).
        eta, zeta1, zeta2, shrink, expand: ratio-test acceptance threshold and radius rules.
        gamma, gamma_min, gamma_inc, gamma_dec, gamma_fail_min: the radius-free rule.
        sigma, sigma_min: initial (default: balanced at ``radius``) and least cubic weight.
        betas, eps: EMA rates and epsilon of the diagonal sources and preconditioned directions.
        weight_decay: L2 coefficient ``w`` (per param group).
        interp_step: distance of the interpolation points from x.
        seed: seed of the random-direction generator.
        rank_tol: relative Gram eigenvalue below which directions count as dependent and are
            dropped in the solve (default ``100 * eps`` of the dtype).
        step_measure: ``"euclidean"`` (``lr`` and ``radius`` bound ``|s|``) or ``"rms"`` (they
            bound ``|s| / sqrt(n)``, so one value fits models of any size).
        radius_rule: when the radius grows: ``"seed"`` (``rho > zeta2`` on the boundary expands
            it by ``expand``), ``"good"`` or ``"last_step"``; trust region only.
        follow_schedule: scale the radius with a scheduled ``lr``; trust region only.
        lr_h: the diagonal sources' curvature is ``diag(...) / lr_h`` (``1``: the seed's).
        ratio_test: which steps pay for the test's forward: ``"always"``, ``"periodic"`` or
            ``"adaptive"``; the others take the first proposal unseen, judged by the next step's
            own loss (:mod:`~drsom.optim.ratio_test`); trust region only.
        test_period: the longest interval between tested steps (not ``"always"``).
        spike: the guard's margin: a loss above ``f_ref + spike * |f_ref|`` after an untested
            step undoes it (not ``"always"``).
        reduce: a callable averaging a tensor in place across processes, so that every process
            takes the same step (:func:`drsom.optim.distributed.mean_over`); None: one process.

    Closure protocol, torch.optim habits, presets, ``p.grad``, diagnostics: docs/optimizer.md.
    """

    step_protocol = STEP_CLOSURE

    def __init__(
        self,
        params,
        lr: float = 1.0,
        *,
        hessian: str = "adam",
        directions: str = "momentum",
        subproblem: str = "trust_region",
        radius: float | None = None,
        history: int = 3,
        momentum_ema: float = 0.0,
        max_trials: int = 5,
        eta: float = 0.1,
        zeta1: float = 0.25,
        zeta2: float = 0.75,
        shrink: float = 0.25,
        expand: float = 2.0,
        gamma: float = 1e-6,
        gamma_min: float = 1e-8,
        gamma_inc: float = 50.0,
        gamma_dec: float = 30.0,
        gamma_fail_min: float = 1e-4,
        sigma: float | None = None,
        sigma_min: float = 1e-12,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        interp_step: float = 1e-2,
        seed: int = 0,
        rank_tol: float | None = None,
        step_measure: str = "euclidean",
        radius_rule: str = "seed",
        follow_schedule: bool = False,
        lr_h: float = 1.0,
        ratio_test: str = "always",
        test_period: int = 16,
        spike: float = 1.0,
        reduce: Callable[[torch.Tensor], None] | None = None,
    ):
        # the arguments by name, taken first so that nothing else is among them
        a = {k: v for k, v in locals().items() if k not in ("self", "params", "__class__")}
        parts = arguments.check(a)

        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            max_trials=max_trials,
            eta=eta,
            zeta1=zeta1,
            zeta2=zeta2,
            shrink=shrink,
            expand=expand,
            gamma_min=gamma_min,
            gamma_inc=gamma_inc,
            gamma_dec=gamma_dec,
            gamma_fail_min=gamma_fail_min,
            sigma_min=sigma_min,
            # Not a hyperparameter: the weight of the momentum direction is chosen by the
            # subproblem every step. The key lets schedulers that cycle momentum (OneCycleLR,
            # CyclicLR with cycle_momentum=True) run on their lr part; what they write here is
            # ignored, with one warning (see step()).
            momentum=None,
        )
        self._init_flat()
        super().__init__(params, defaults)
        # the parameters are checked here: torch's constructor makes the param groups of them
        live = self._trainable()
        if not live:
            raise ValueError("DRSOM: no trainable parameters (requires_grad=True) were given")
        check_parameters(live)
        self._set_up(live, parts, a)

    def _set_up(self, live: list[torch.Tensor], parts: arguments.Checked, a: dict) -> None:
        """The constructor's state: the parts, the guard's undo point, the flat buffer."""
        self.hessian, self.directions = a["hessian"], a["directions"]
        self.subproblem, self.step_measure = a["subproblem"], a["step_measure"]
        self._dirs, self._curv, self._ctrl = parts.directions, parts.curvature, parts.controller
        self._test = parts.ratio_test
        self._rank_tol = a["rank_tol"]
        self._reduce = a["reduce"] or no_reduce
        self._warned_momentum = False
        self._before: torch.Tensor | None = None  # x before an untested step (guard's undo)
        self._untested_norm = 0.0
        self._undone = False  # this step began by undoing the last (untested) one
        dtype, device = live[0].dtype, live[0].device
        self._R = torch.zeros(0, 0, dtype=dtype, device=device)  # sized by _repack
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(a["seed"])
        self._repack(live)
        self._lr0 = a["lr"]
        self._radius0 = parts.radius
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.last_step: dict = {}

    @classmethod
    def preset(cls, name: str, params, **overrides) -> DRSOM:
        """Build DRSOM from a named preset (:data:`PRESETS`), with overrides on top."""
        one_of("preset", name, tuple(PRESETS), prefix=_DRSOM_LINE)
        return cls(params, **{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ state
    def _state_rows(self) -> list[torch.Tensor]:
        """Flat per-element state in the buffer's layout: direction rows, moving averages."""
        return [*self._R[1:], *self._curv.per_element().values()]

    def _relayout(self, numel, dtype, device, carry, old_params) -> None:
        """The direction matrix R, the sources' averages, the generator and the weight-decay
        slices, for a new flat buffer (:class:`~drsom.optim.flat.FlatParams`)."""
        rows = 1 + self._dirs.rows + self._dirs.state_rows
        R = torch.zeros(rows, numel, dtype=dtype, device=device)
        new_bufs = {
            name: torch.zeros(numel, dtype=dtype, device=device)
            for name in self._curv.per_element()
        }
        carry([*R[1:], *new_bufs.values()])
        for p in old_params:
            if p.grad is not None and shares(p.grad, self._R):
                p.grad = None  # a view of the old direction buffer
        if device != self._generator.device:
            # a generator lives on one device: continue the stream with a seed drawn from it
            g = self._generator
            seed = int(torch.randint(2**62, (), generator=self._generator, device=g.device))
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(seed)
        self._R = R
        self._curv.set_per_element(new_bufs)
        if not self._test.always:
            # the untested step's starting point is in the old layout: it is judged no more
            self._before = torch.empty(numel, dtype=dtype, device=device)
            self._test.pending = False
        eps = torch.finfo(dtype).eps
        self.rank_tol = self._rank_tol if self._rank_tol is not None else 100 * eps
        # weight decay per group as (start, end, group index) slices of the flat buffer; the
        # index, not the dict: load_state_dict replaces the group dicts
        self._decay, offset = [], 0
        for g in self.param_groups:
            n = sum(p.numel() for p in g["params"] if p.requires_grad)
            self._decay.append((offset, offset + n, len(self._decay)))
            offset += n

    def _check_groups(self) -> None:
        """What schedulers and users may have written into the param groups since the last step."""
        lrs = [g["lr"] for g in self.param_groups]
        if any(lr != lrs[0] for lr in lrs):
            raise ValueError(
                f"DRSOM: all param groups must share lr (DRSOM takes one step for all), got "
                f"{lrs}; schedule every group alike"
            )
        if not self._warned_momentum and any(
            g.get("momentum") is not None for g in self.param_groups
        ):
            self._warned_momentum = True
            warnings.warn(
                "DRSOM: ignoring the param groups' 'momentum' (a scheduler's cycle_momentum sets "
                "it): DRSOM chooses the weight of its momentum direction by the subproblem each "
                "step; pass cycle_momentum=False to the scheduler to silence this",
                stacklevel=_outside_stacklevel(),
            )

    def _views(self, buf: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-shaped views of a flat buffer (a row of R or a scratch vector)."""
        base = buf.storage_offset()
        return [torch.as_strided(buf, s, st, base + o) for s, st, o in self._layout]

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        """One DRSOM step on the mini-batch of ``closure``; returns the closure's loss."""
        if closure is None or not callable(closure):
            raise ValueError(
                "DRSOM.step needs a closure: a function of no arguments returning the mini-batch "
                "loss (without calling backward); see drsom.optim.make_closure"
            )
        self._ensure_packed()
        self._check_groups()
        group = self.param_groups[0]
        bound = float(group["lr"])  # the step bound: the largest trust radius Delta
        scale = bound / self._lr0
        counts: Counter = Counter()
        loss, terms = self._subspace_model(closure, counts, bound)
        c, f0 = terms["c"], terms["f0"]
        k = len(c)
        info = dict(accepted=False, rho=math.nan, alpha=[0.0] * k, trials=0, pred=0.0)
        info.update(actual=0.0, step_norm=0.0, lam=math.nan, loss=terms["loss"], k=0)
        tested = self._test.due()
        info.update(tested=tested, undone=self._undone)
        self._test.seen(terms["loss"])
        if not (math.isfinite(f0) and np.isfinite(c).all()):
            self._restart_state()  # a non-finite gradient would poison every later Q
            return self._finish(loss, info, counts)
        m = ReducedModel(c, *self._metric_and_curvature(terms), self.rank_tol)
        info["k"] = m.rank
        self._ctrl.start(m, min(bound, self._radius0), bound)

        # trials: solve, move, ratio test on the same mini-batch
        applied = np.zeros(k)
        eps = torch.finfo(self._flat.dtype).eps
        Gw, Rxw, Xw = terms["Gw"], terms["Rxw"], terms["Xw"]
        for _ in range(group["max_trials"] if tested else 1):
            sol = self._ctrl.propose(m, bound, group, scale)
            alpha = sol.alpha
            if not (sol.pred > 0 and np.isfinite(alpha).all()):
                break  # nothing to gain in this subspace (e.g. g = 0)
            if not tested:  # taken unseen; the next step's loss judges it (the guard)
                self._before.copy_(self._flat)
                self._move(alpha)
                self._untested_norm = float(sol.norm)
                info.update(accepted=True, alpha=[float(a) for a in alpha], pred=float(sol.pred))
                info.update(actual=math.nan)  # not evaluated
                info.update(step_norm=float(sol.norm), lam=float(sol.lam))
                break
            self._move(alpha - applied)
            applied = alpha
            with phase("trial"):
                f_trial = float(self._reduced(check_loss(closure())))  # one host sync per trial
            counts["forward"] += 1
            counts["trials"] += 1
            f_trial += 0.5 * (Xw + 2 * alpha @ Rxw + alpha @ Gw @ alpha)  # + w/2 |x + V^T alpha|^2
            actual = f0 - f_trial
            rho = _ratio(actual, sol.pred, f0, eps)
            accepted = rho > group["eta"]
            self._ctrl.update(m, sol, rho, accepted, bound, group, scale)
            info.update(rho=float(rho), pred=float(sol.pred), actual=float(actual))
            info.update(lam=float(sol.lam), trials=counts["trials"])
            if accepted:
                info.update(accepted=True, alpha=[float(a) for a in alpha])
                info.update(step_norm=float(sol.norm))
                break

        if tested:
            at_bound = self._ctrl.value >= bound * (1 - 1e-12)
            self._test.after_tested(info["accepted"] and counts["trials"] == 1, at_bound)
        else:
            self._test.after_untested(moved=info["accepted"])
        if info["accepted"]:
            self._dirs.accept(self._R, info["alpha"])
        else:
            if applied.any():
                self._move(-applied)
            self._dirs.reset(self._R)
        info["alpha"] = [-info["alpha"][0], *info["alpha"][1:]]  # coefficients of [-g, ...]
        return self._finish(loss, info, counts)

    def _metric_and_curvature(self, terms: dict) -> tuple[np.ndarray, np.ndarray]:
        """The subproblem's metric and curvature: the Gram matrix in the step measure's units.

        ``rms`` measures |s| / sqrt(n), so radius and step bound are per-coordinate lengths. A
        direction set without the gradient in its subspace has row 0 blanked: the solver drops
        directions of zero length (alpha_0 = 0), while c = V g still prices the others.
        """
        G, Q = terms["G"], terms["Q"]
        if self.step_measure == "rms":
            G = G / self._numel
        if not self._dirs.with_gradient:
            G, Q = G.copy(), Q.copy()
            G[0, :] = G[:, 0] = Q[0, :] = Q[:, 0] = 0.0
        return G, Q

    def _subspace_model(self, closure, counts: Counter, bound: float):
        """Loss, gradient and directions at x, and the k x k model on the host (one sync).

        Returns the closure's loss and the model's terms, float64 arrays: ``c, G, Q`` of the full
        objective f + w/2 |x|^2, its L2 parts ``Gw, Rxw, Xw`` (to price trial points without
        another pass) and the values ``loss`` (f) and ``f0`` (f with the L2 term).
        """
        loss, loss0, graph, missing = self._gradient(closure, counts)
        x = self._flat

        # row 0 is the gradient g of f + w/2 |x|^2, the other rows the direction memory: V
        k = self._dirs.active()
        V = self._R[:k]
        for a, b, gi in self._decay:
            if w := self.param_groups[gi]["weight_decay"]:
                self._R[0, a:b].add_(x[a:b], alpha=w)
        self._dirs.prepare(self._R, self._generator)
        if missing:  # parameters without a gradient stay where they are
            for row in range(k):
                views = self._views(self._R[row])
                torch._foreach_zero_([views[i] for i in missing])

        with phase("gram"):
            G = self._curv.gram(V)
        Gw, Rxw, Xw = self._decay_terms(V, G)
        euclidean_bound = bound * math.sqrt(self._numel) if self.step_measure == "rms" else bound
        probe = Probe(self, closure, counts, graph, loss0, euclidean_bound)
        with _double_backward(), phase("quadratic"):
            Q = self._curv.quadratic(probe, V, G[0] - Rxw)  # of f alone: c - w V x = V grad f
        del graph, probe  # frees the double-backward graph
        packed = torch.cat([G.flatten(), Q.flatten(), Gw.flatten(), Rxw, Xw[None], loss0[None]])
        host = packed.to("cpu", torch.float64).numpy()  # the step's one host synchronisation
        kk = k * k
        G_h, Q_h, Gw_h = (host[i * kk : (i + 1) * kk].reshape(k, k) for i in range(3))
        terms = dict(G=G_h, Q=Q_h + Gw_h, Gw=Gw_h, Rxw=host[3 * kk : 3 * kk + k], Xw=host[-2])
        terms.update(c=G_h[0].copy(), loss=float(host[-1]), f0=float(host[-1] + 0.5 * host[-2]))
        return loss, terms

    def _gradient(self, closure, counts: Counter):
        """Evaluate the closure and put its gradient in row 0 of R (``p.grad`` views it).

        Returns the loss (this process's, with its graph), its value averaged over the processes
        (``reduce``), the gradient with its graph when the curvature source differentiates it
        again (else None), and the indices of the parameters the loss did not reach. Row 0 holds
        the gradient averaged over the processes.
        """
        params = self._params
        row0 = self._views(self._R[0])
        graph = None
        with torch.enable_grad():
            self._reached.clear()
            loss, value = self._first_forward(closure, counts)
            if self._reached:  # the closure ran backward() into our parameters itself
                raise ValueError(_BACKWARD_IN_CLOSURE)
            if not loss.requires_grad:
                raise ValueError(
                    "DRSOM: the closure's loss does not depend on the parameters (no grad_fn); "
                    "closure() must compute it from the model, outside torch.no_grad()"
                )
            if self._curv.needs_graph:  # HVPs differentiate the gradient again: keep its graph
                with _double_backward(), phase("gradient"):
                    graph = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                reached = [g is not None for g in graph]
                self._R[0].zero_()
                torch._foreach_copy_(
                    [v for v, g in zip(row0, graph, strict=True) if g is not None],
                    [g.detach() for g in graph if g is not None],
                )
            else:
                # backward accumulates in place into p.grad, here views of row 0: the gradient
                # lands in the flat buffer without a second parameter-sized copy
                self._R[0].zero_()
                for p, v in zip(params, row0, strict=True):
                    p.grad = v
                loss.backward(inputs=params)
                reached = [id(p) in self._reached for p in params]
        self._reduce(self._R[0])
        counts["grad"] += 1
        missing = [i for i, r in enumerate(reached) if not r]
        if len(missing) == len(params):
            raise ValueError("DRSOM: the closure's loss does not depend on the parameters")
        for i in missing:
            params[i].grad = None
        return loss, value, graph, missing

    def _reduced(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss's value averaged over the processes (detached; a copy only when reduced)."""
        if self._reduce is no_reduce:
            return loss.detach()
        value = loss.detach().clone()
        self._reduce(value)
        return value

    def _first_forward(self, closure, counts: Counter) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss at x and its value averaged over the processes; after an untested step,
        judged first (the guard) and, when it fails, the step undone and the loss evaluated again
        at the restored point.

        A closure with ``checkpoint()`` and ``rewind()`` (:class:`~.closure.BatchClosure`) gets
        its BatchNorm statistics and random state back from before the judged forward.
        """
        self._undone = False
        judge = self._test.pending
        if judge and hasattr(closure, "checkpoint"):
            closure.checkpoint()
        loss = check_loss(closure())
        value = self._reduced(loss)
        counts["forward"] += 1
        if not judge or self._test.guard(float(value)):  # the guard: one host sync
            return loss, value
        del loss
        self._flat.copy_(self._before)
        self._dirs.reset(self._R)
        self._ctrl.shrink(self._untested_norm, self.param_groups[0])
        self._test.failed()
        self._undone = True
        if hasattr(closure, "rewind"):
            closure.rewind()
        loss = check_loss(closure())
        counts["forward"] += 1
        return loss, self._reduced(loss)

    def _decay_terms(self, V: torch.Tensor, G: torch.Tensor):
        """The L2 term's parts of the model: ``Gw = sum w V V^T``, ``Rxw = sum w V x`` and
        ``Xw = sum w |x|^2`` over the param groups' slices (w: each group's weight decay)."""
        x = self._flat
        Gw = torch.zeros_like(G)
        Rxw = torch.zeros(len(V), dtype=G.dtype, device=G.device)
        Xw = torch.zeros((), dtype=G.dtype, device=G.device)
        for a, b, gi in self._decay:
            w = self.param_groups[gi]["weight_decay"]
            if w:
                Vs, xs = V[:, a:b], x[a:b]
                Gw += w * (G if (a, b) == (0, self._numel) else Vs @ Vs.T)
                Rxw += w * (Vs @ xs)
                Xw += w * torch.dot(xs, xs)
        return Gw, Rxw, Xw

    @torch.no_grad()
    def subspace_model(self, closure) -> dict:
        """Diagnostics: the current model ``c, G, Q`` (float64) without taking a step.

        Rows are ``[g, v_2, ...]`` (gradient first, with its sign). It evaluates the closure like
        a step does and advances the diagonal sources' moving averages and the random generator.
        """
        self._ensure_packed()
        return self._subspace_model(closure, Counter(), float(self.param_groups[0]["lr"]))[1]

    def _move(self, delta) -> None:
        for i, a in enumerate(delta):
            if a != 0.0:
                self._flat.add_(self._R[i], alpha=float(a))

    def _restart_state(self) -> None:
        self._dirs.reset(self._R)
        self._curv.reset()

    def _finish(self, loss, info, counts):
        counts["steps"] += 1
        counts["accepted"] += int(info["accepted"])
        for key in _COUNTS:
            self.counts[key] += counts[key]
        info.update({key: counts[key] for key in ORACLES})
        # "radius" is the trust radius; a radius-free controller reports its own parameter
        # (gamma, sigma) instead, and "radius" is then the length of the step taken
        info.update(radius=info["step_norm"], gamma=None, sigma=None)
        info.update(self._ctrl.diagnostics())
        self.last_step = info
        return loss

    # --------------------------------------------------------------- protocol
    @property
    def needs_double_backward(self) -> bool:
        """Whether a step differentiates the gradient again (``hessian="hvp"``)."""
        return self._curv.needs_graph

    def step_counts(self) -> dict[str, int]:
        """Forwards, gradients and HVPs of the last step (zeros before the first)."""
        return {key: int(self.last_step.get(key, 0)) for key in ORACLES}

    def step_diagnostics(self) -> dict[str, float]:
        """The last step as flat floats: the ratio test, the solution and each part's own state.

        ``alpha_i`` are the coefficients of ``[-g, v_2, ...]``, one key per row the direction set
        can fill (0 for rows that carried no direction), so every step has the same keys.
        """
        info = self.last_step
        if not info:
            return {}
        out = {key: _as_float(info[key]) for key in _DIAGNOSTICS}
        if not self._test.always:  # always-tested runs keep the columns they always had
            out.update(tested=float(info["tested"]), undone=float(info["undone"]))
        alpha = info["alpha"]
        out.update({f"alpha_{i}": float(alpha[i]) if i < len(alpha) else 0.0
                    for i in range(1 + self._dirs.rows)})  # fmt: skip
        for part in (self._ctrl, self._curv, self._dirs):
            out.update({key: _as_float(v) for key, v in part.diagnostics().items()})
        return out

    def describe_hyperparameters(self) -> dict[str, str | bool | float]:
        """The choices of the three parts, which are not param-group values."""
        ctrl = self._ctrl
        return dict(
            hessian=self.hessian,
            directions=self.directions,
            subproblem=self.subproblem,
            step_measure=self.step_measure,
            radius_rule=getattr(ctrl, "rule", "seed"),
            follow_schedule=getattr(ctrl, "follow_schedule", False),
            lr_h=getattr(self._curv, "lr_h", 1.0),
            **({} if self._test.always else {"ratio_test": self._test.name}),
        )

    def state_numel(self) -> int:
        """Elements of the direction matrix (row 0 is ``p.grad``'s storage), the averages and, under
        a ratio-test policy, the guard's undo point (one parameter-sized buffer)."""
        before = 0 if self._before is None else self._before.numel()  # the guard's undo point
        return self._R.numel() + sum(b.numel() for b in self._curv.per_element().values()) + before

    # ------------------------------------------------------------ state dict
    def state_dict(self):
        sd = super().state_dict()
        sd["state"]["drsom"] = {
            "R": self._R[1:].clone(),
            "directions": self._dirs.state_dict(),
            "curvature": self._curv.state_dict(),
            "controller": self._ctrl.state_dict(),
            "generator": self._generator.get_state(),
            "lr0": self._lr0,
            "counts": dict(self.counts),
            "kind": (self.hessian, self.directions, self.subproblem),
        }
        if not self._test.always:
            pending = self._test.pending
            sd["state"]["drsom"]["ratio_test"] = {
                **self._test.state_dict(),
                "before": self._before.clone() if pending else None,
                "untested_norm": self._untested_norm,
            }
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        state = dict(state_dict["state"])
        own = state.pop("drsom")
        self._ensure_packed()  # the buffers below are laid out for the current parameters
        super().load_state_dict({**state_dict, "state": state})
        if tuple(own["kind"]) != (self.hessian, self.directions, self.subproblem):
            raise ValueError(
                f"DRSOM: state was saved with (hessian, directions, subproblem) = {own['kind']}, "
                f"this optimizer is {(self.hessian, self.directions, self.subproblem)}"
            )
        self._R[1:].copy_(own["R"])
        self._dirs.load_state_dict(own["directions"])
        self._curv.load_state_dict(own["curvature"], like=self._R)
        self._ctrl.load_state_dict(own["controller"])
        self._generator.set_state(own["generator"].cpu())
        self._lr0 = float(own["lr0"])
        self.counts = dict(own["counts"])
        test = own.get("ratio_test")
        if not self._test.always and test is not None:
            self._test.load_state_dict(test)
            self._untested_norm = float(test["untested_norm"])
            if self._test.pending:
                self._before.copy_(test["before"])


_BACKWARD_IN_CLOSURE = (
    "DRSOM: closure must not call backward(); DRSOM differentiates it itself. Protocol: "
    "closure() takes no arguments and returns the mini-batch loss as a scalar tensor, without "
    "zero_grad() or backward(); drsom.optim.make_closure(model, loss_fn, inputs, targets) "
    "builds one"
)

# What torch.compile (AOTAutograd) raises when a compiled graph's backward is differentiated again.
_NO_DOUBLE_BACKWARD = ("does not currently support double backward", "donated buffer")


@contextlib.contextmanager
def _double_backward():
    """Turn torch.compile's refusal of a double backward (hessian="hvp") into one DRSOM line."""
    try:
        yield
    except RuntimeError as err:
        if not any(text in str(err) for text in _NO_DOUBLE_BACKWARD):
            raise
        raise ValueError(
            "DRSOM: hessian='hvp' differentiates the gradient again (double backward), which a "
            "torch.compile'd model does not support; with a compiled model use hessian='fd', "
            "'interp', 'adam' or 'adabelief', or do not compile it"
        ) from None


def _ratio(actual: float, pred: float, f0: float, eps: float) -> float:
    """rho = actual / predicted decrease, kept sound when both reach round-off.

    Near a solution both decreases fall to the noise level of evaluating f, where their quotient
    is noise. Both are shifted by that level, delta = 100 eps |f| (the standard safeguard): far
    above it rho is unchanged, far below it rho -> 1 and the model is trusted.
    """
    if not math.isfinite(actual):
        return -math.inf
    delta = 100.0 * eps * max(abs(f0), eps)
    return (actual + delta) / (pred + delta)


def _outside_stacklevel() -> int:
    """warnings' stacklevel of the caller's line: the first frame outside torch and this package
    (torch wraps step() in a varying number of layers: no_grad, hooks, schedulers' counters)."""
    inside = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level
