"""Exact solvers for DRSOM's k-dimensional subproblems.

The step is ``x + V^T alpha`` with ``V`` the k directions (rows). In the coefficients alpha the
model of the decrease is

    m(alpha) = c^T alpha + 1/2 alpha^T Q alpha,     |alpha|_G = sqrt(alpha^T G alpha) = |V^T alpha|

with ``G = V V^T`` the Gram matrix. All three subproblems share one structure: their solutions
are ``alpha(lambda) = -(Q + lambda G)^+ c`` for a multiplier ``lambda >= max(0, -theta_min)``,
where ``theta`` are the generalised eigenvalues of ``(Q, G)``. So the model is reduced once, on the
host in float64 (k is tiny): whiten by G (dropping directions that are zero or nearly dependent,
so G is never inverted when singular), eigen-decompose the whitened Q, and each subproblem becomes
a scalar equation in lambda:

* trust region  min m(alpha) s.t. |alpha|_G <= radius  (secular equation |alpha(lambda)| = radius)
* regularised   lambda = lb + gamma * span, no radius     (the official code's radius-free rule)
* cubic         min m(alpha) + sigma/3 |alpha|_G^3        (lambda = sigma |alpha(lambda)|_G)

The "hard case" (c has no component along the lowest eigenvector, so the multiplier sits at
-theta_min) is handled by moving along that eigenvector to reach the required length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ReducedModel", "Solution"]

_MAX_ITER = 200


@dataclass
class Solution:
    alpha: np.ndarray  # coefficients of the k directions
    lam: float  # multiplier of G in (Q + lam G) alpha = -c
    norm: float  # |alpha|_G, the length of the step in parameter space
    pred: float  # predicted decrease -m(alpha) (>= 0)
    boundary: bool  # True when the step length was set by the radius (or cubic term)


class ReducedModel:
    """The model ``c, G, Q`` reduced to an orthonormal basis of the span of the directions.

    ``rank_tol``: a direction combination whose Gram eigenvalue (after scaling every direction
    to unit length) is below ``rank_tol`` times the largest is dropped as linearly dependent.
    """

    def __init__(self, c, G, Q, rank_tol: float = 1e-12):
        c = np.asarray(c, dtype=np.float64)
        G = np.asarray(G, dtype=np.float64)
        Q = np.asarray(Q, dtype=np.float64)
        k = c.shape[0]
        self.k = k
        lengths = np.sqrt(np.clip(np.diag(G), 0.0, None))
        finite = np.isfinite(lengths) & np.all(np.isfinite(G), axis=1) & np.isfinite(c)
        finite &= np.all(np.isfinite(Q), axis=1)
        live = np.flatnonzero(finite & (lengths > 0))
        basis = np.zeros((k, 0))
        if live.size:
            scale = 1.0 / lengths[live]
            Gn = G[np.ix_(live, live)] * np.outer(scale, scale)
            sig, U = np.linalg.eigh(0.5 * (Gn + Gn.T))
            keep = sig > rank_tol * max(sig.max(), 0.0)
            if keep.any():
                W = (scale[:, None] * U[:, keep]) / np.sqrt(sig[keep])
                basis = np.zeros((k, W.shape[1]))
                basis[live] = W
        self.rank = basis.shape[1]
        Qr = basis.T @ Q @ basis
        self.theta, P = np.linalg.eigh(0.5 * (Qr + Qr.T))  # ascending
        self.B = basis @ P  # alpha = B @ beta, |alpha|_G = |beta|
        self.chat = self.B.T @ c  # c in the eigenbasis
        self._c, self._Q = c, Q

    # ----------------------------------------------------------------- helpers
    @property
    def lower_bound(self) -> float:
        """Smallest multiplier keeping Q + lam G positive semidefinite on the span."""
        return max(0.0, -self.theta[0]) if self.rank else 0.0

    def _beta(self, lam: float) -> np.ndarray:
        return -self.chat / (self.theta + lam)

    def _norm(self, lam: float) -> float:
        return float(np.linalg.norm(self._beta(lam)))

    def _hard_part(self, lam: float):
        """Split at lam = lower bound: (beta over the non-singular part, singular indices) or None.

        Returns None when c has a component along the singular eigenvectors (not the hard case).
        """
        scale = max(1.0, float(np.abs(self.theta).max()))
        sing = (self.theta + lam) <= 1e-12 * scale
        cnorm = float(np.linalg.norm(self.chat))
        if not sing.any() or np.abs(self.chat[sing]).max() > 1e-10 * max(cnorm, 1e-300):
            return None
        beta = np.zeros_like(self.chat)
        ok = ~sing
        beta[ok] = -self.chat[ok] / (self.theta[ok] + lam)
        return beta, np.flatnonzero(sing)

    def predicted(self, alpha) -> float:
        """Predicted decrease -m(alpha), computed in the original coordinates."""
        alpha = np.asarray(alpha, dtype=np.float64)
        return float(-(self._c @ alpha + 0.5 * alpha @ self._Q @ alpha))

    def _solution(self, beta: np.ndarray, lam: float, boundary: bool) -> Solution:
        alpha = self.B @ beta
        pred = float(-(self.chat @ beta + 0.5 * (self.theta * beta * beta).sum()))
        return Solution(alpha, float(lam), float(np.linalg.norm(beta)), pred, boundary)

    def _zero(self) -> Solution:
        return Solution(np.zeros(self.k), 0.0, 0.0, 0.0, False)

    @staticmethod
    def _root(fn, lo: float, hi: float) -> float:
        """Root of a decreasing ``fn`` on (lo, hi], fn(hi) <= 0: Newton safeguarded by bisection."""
        lam = hi
        for _ in range(_MAX_ITER):
            val, slope = fn(lam)
            if val == 0.0:
                return lam
            if val > 0:
                lo = lam
            else:
                hi = lam
            step = lam - val / slope if slope < 0 else math.nan
            if not lo < step < hi:
                step = 0.5 * (lo + hi)
            if abs(step - lam) <= 1e-15 * max(1.0, abs(lam)):
                return step
            lam = step
        return lam

    # ------------------------------------------------------------- subproblems
    def trust_region(self, radius: float) -> Solution:
        """argmin m(alpha) s.t. |alpha|_G <= radius (global minimiser, Moré–Sorensen in k dims)."""
        if self.rank == 0 or radius <= 0:
            return self._zero()
        theta, chat = self.theta, self.chat
        lb = self.lower_bound
        if theta[0] > 0:
            beta = -chat / theta
            if np.linalg.norm(beta) <= radius:
                return self._solution(beta, 0.0, False)
        hard = self._hard_part(lb)
        if hard is not None:
            beta, sing = hard
            gap = radius**2 - float(beta @ beta)
            if gap >= 0:
                beta[sing[0]] = math.sqrt(gap)
                return self._solution(beta, lb, True)

        # 1/|beta(lam)| - 1/radius is increasing and nearly linear in lam: Newton on it.
        def secular(lam):
            b = self._beta(lam)
            n = float(np.linalg.norm(b))
            dn = -float((b * b / (theta + lam)).sum()) / n
            return -(1.0 / n - 1.0 / radius), dn / n**2

        hi = lb + float(np.linalg.norm(chat)) / radius
        lam = self._root(secular, lb, hi)
        return self._solution(self._beta(lam), lam, True)

    def regularized(self, gamma: float) -> Solution:
        """alpha = -(Q + lam G)^-1 c with lam = lb + gamma * span (radius-free rule).

        ``span`` is the spread of the curvature above the lower bound, theta_max - lb, so gamma is
        a scale-free fraction of it (falls back to max|theta|, then 1, when that is zero).
        """
        if self.rank == 0:
            return self._zero()
        lb = self.lower_bound
        span = self.theta[-1] - lb
        if span <= 0:
            span = float(np.abs(self.theta).max()) or 1.0
        lam = lb + gamma * span
        denom = self.theta + lam
        beta = np.where(denom > 0, -self.chat / np.where(denom > 0, denom, 1.0), 0.0)
        return self._solution(beta, lam, False)

    def cubic(self, sigma: float) -> Solution:
        """argmin m(alpha) + sigma/3 |alpha|_G^3: the root of |alpha(lam)|_G = lam / sigma."""
        if self.rank == 0:
            return self._zero()
        theta, chat = self.theta, self.chat
        lb = self.lower_bound
        hard = self._hard_part(lb)
        if hard is not None:
            beta, sing = hard
            gap = (lb / sigma) ** 2 - float(beta @ beta)
            if gap >= 0:
                beta[sing[0]] = math.sqrt(gap)
                return self._solution(beta, lb, True)
        cn = float(np.linalg.norm(chat))
        if cn == 0.0:
            return self._zero()

        def equation(lam):
            b = self._beta(lam)
            n = float(np.linalg.norm(b))
            dn = -float((b * b / (theta + lam)).sum()) / n
            return n - lam / sigma, dn - 1.0 / sigma

        hi = lb + math.sqrt(sigma * cn) + 1e-300
        lam = self._root(equation, lb, hi)
        return self._solution(self._beta(lam), lam, True)
