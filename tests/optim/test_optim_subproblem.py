"""The k x k solvers against brute force: a dense grid of the boundary plus the interior point."""

import numpy as np
import pytest

from drsom.optim.subproblem import ReducedModel


def _instance(kind: str, k: int, rng):
    V = rng.standard_normal((k, 40))
    if kind == "singular_G" and k >= 2:
        V[-1] = 2.0 * V[0] - V[1] if k > 2 else 3.0 * V[0]  # a dependent direction
    G = V @ V.T
    A = rng.standard_normal((40, 40))
    A = A + A.T
    if kind == "definite":
        A = A @ A.T / 40 + np.eye(40)
    Q = V @ A @ V.T
    c = V @ rng.standard_normal(40)
    if kind == "hard" and k >= 2:
        # c orthogonal (in the G metric) to the lowest generalised eigenvector of (Q, G)
        L = np.linalg.cholesky(G)
        Li = np.linalg.inv(L)
        theta, P = np.linalg.eigh(Li @ Q @ Li.T)
        if theta[0] >= 0:  # make the lowest curvature negative
            Q = Q - (theta[0] + 1.0) * G
        theta, P = np.linalg.eigh(Li @ Q @ Li.T)
        chat = P.T @ (Li @ c)
        chat[0] = 0.0
        c = L @ (P @ chat)
    return c, G, Q


def _grid_min(c, G, Q, radius, n=60000, rng=None):
    """Smallest model value over many points of the G-sphere of the given radius."""
    k = len(c)
    # an orthonormal basis of span(V) in the G metric
    sig, U = np.linalg.eigh(G)
    keep = sig > 1e-10 * sig.max()
    W = U[:, keep] / np.sqrt(sig[keep])
    z = rng.standard_normal((n, W.shape[1]))
    z = radius * z / np.linalg.norm(z, axis=1, keepdims=True)
    A = z @ W.T
    vals = A @ c + 0.5 * np.einsum("ni,ij,nj->n", A, Q, A)
    del k
    return vals.min()


def _model(c, Q, a):
    return c @ a + 0.5 * a @ Q @ a


@pytest.mark.parametrize("kind", ["definite", "indefinite", "hard", "singular_G"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_trust_region_is_global_minimiser(kind, k):
    rng = np.random.default_rng(100 * k + len(kind))
    c, G, Q = _instance(kind, k, rng)
    model = ReducedModel(c, G, Q)
    for radius in (1e-2, 0.3, 3.0, 100.0):
        sol = model.trust_region(radius)
        a = sol.alpha
        norm = np.sqrt(a @ G @ a)
        assert norm <= radius * (1 + 1e-9)
        # better than every boundary point of a dense sample, and than the interior Newton point
        best = _grid_min(c, G, Q, radius, rng=rng)
        assert _model(c, Q, a) <= best + 1e-9 * max(1.0, abs(best))
        try:
            newton = np.linalg.lstsq(Q, -c, rcond=None)[0]
            if np.sqrt(newton @ G @ newton) <= radius and np.all(np.linalg.eigvalsh(Q) >= 0):
                assert _model(c, Q, a) <= _model(c, Q, newton) + 1e-9
        except np.linalg.LinAlgError:
            pass
        # KKT: (Q + lam G) a = -c, lam >= 0, complementarity, Q + lam G PSD on the span
        resid = (Q + sol.lam * G) @ a + c
        assert np.linalg.norm(resid) <= 1e-7 * (np.linalg.norm(c) + np.linalg.norm(Q) + 1)
        assert sol.lam >= 0
        assert sol.lam * (radius - norm) <= 1e-7 * radius * (1 + sol.lam)
        assert sol.pred == pytest.approx(-_model(c, Q, a), rel=1e-8, abs=1e-12)


def test_hard_case_reaches_the_boundary_along_the_lowest_eigenvector():
    # Q = diag(-1, 2), c = (0, 1): the multiplier sits at 1 and the solution needs the
    # eigenvector component that the secular equation alone never produces.
    c, G, Q = np.array([0.0, 1.0]), np.eye(2), np.diag([-1.0, 2.0])
    sol = ReducedModel(c, G, Q).trust_region(2.0)
    assert sol.lam == pytest.approx(1.0)
    assert np.linalg.norm(sol.alpha) == pytest.approx(2.0)
    assert sol.alpha[1] == pytest.approx(-1.0 / 3.0)
    assert abs(sol.alpha[0]) == pytest.approx(np.sqrt(4 - 1 / 9))


def test_singular_gram_drops_dependent_direction():
    # g parallel to d (the official code's crash): the solve works in the 1-D span
    v = np.array([1.0, 2.0, 2.0])
    V = np.stack([v, -0.5 * v])
    G = V @ V.T
    Q = V @ np.diag([1.0, 2.0, 3.0]) @ V.T
    c = V @ np.array([1.0, 0.0, 0.0])
    model = ReducedModel(c, G, Q)
    assert model.rank == 1
    sol = model.trust_region(10.0)
    step = V.T @ sol.alpha
    # the exact 1-D minimiser along v: t* = -(v.g)/(v^T H v)
    t = -(v @ np.array([1.0, 0, 0])) / (v @ np.diag([1.0, 2, 3]) @ v)
    np.testing.assert_allclose(step, t * v, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_cubic_solves_its_optimality_conditions(k):
    rng = np.random.default_rng(k)
    c, G, Q = _instance("indefinite", k, rng)
    model = ReducedModel(c, G, Q)
    for sigma in (1e-2, 1.0, 1e2):
        sol = model.cubic(sigma)
        a = sol.alpha
        norm = np.sqrt(a @ G @ a)
        assert sol.lam == pytest.approx(sigma * norm, rel=1e-8)
        resid = (Q + sol.lam * G) @ a + c
        assert np.linalg.norm(resid) <= 1e-7 * (np.linalg.norm(c) + 1)
        # global minimiser of the cubic model: it beats a dense sample over radii
        cubic = _model(c, Q, a) + sigma / 3 * norm**3
        for r in np.linspace(0.1, 3, 15) * norm:
            best = _grid_min(c, G, Q, r, n=4000, rng=rng) + sigma / 3 * r**3
            assert cubic <= best + 1e-9 * max(1, abs(best))


def test_regularized_rule_matches_its_formula():
    rng = np.random.default_rng(3)
    c, G, Q = _instance("indefinite", 2, rng)
    model = ReducedModel(c, G, Q)
    L = np.linalg.cholesky(G)
    Li = np.linalg.inv(L)
    theta = np.linalg.eigvalsh(Li @ Q @ Li.T)
    lb = max(0.0, -theta[0])
    for gamma in (1e-6, 0.1, 10.0):
        sol = model.regularized(gamma)
        lam = lb + gamma * (theta[-1] - lb)
        assert sol.lam == pytest.approx(lam)
        np.testing.assert_allclose(sol.alpha, np.linalg.solve(Q + lam * G, -c), rtol=1e-8)
