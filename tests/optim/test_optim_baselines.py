"""Baseline optimizers: published updates, published defaults, which step protocol each needs."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from drsom.cfg.compose import CONFIG_DIR
from drsom.optim import build, step_protocol

OPTIMIZER_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
BASELINE_NAMES = [n for n in OPTIMIZER_CONFIGS if not n.startswith("drsom")]

# A diagonal quadratic f = sum 0.5 * a * (theta - c)^2 over two tensors. Entries are chosen so that
# every ingredient of Algorithm 2 shows in the first steps: large |theta| (weight decay), gradients
# ~1e-4 where the eps inside s dominates, and mixed signs and curvatures.
THETA0 = [
    torch.tensor([[10.0, -8.0, 0.5], [2.0, -3.0, 1.0]], dtype=torch.float64),
    torch.tensor([0.7, -1.2, 5.0, 0.0], dtype=torch.float64),
]
CURV = [
    torch.tensor([[1.0, 0.5, 3.0], [2.0, 1.0, 0.25]], dtype=torch.float64),
    torch.tensor([1.5, 0.3, 2.0, 1.0], dtype=torch.float64),
]
CENTRE = [
    THETA0[0] - torch.tensor([[1.0, -2.0, 0.3], [1e-4, -2e-4, 4.0]], dtype=torch.float64),
    torch.tensor([0.0, 1.0, 4.0, -0.5], dtype=torch.float64),
]
STEPS = 3


def quadratic_grads(thetas):
    return [a * (t - c) for t, a, c in zip(thetas, CURV, CENTRE, strict=True)]


def quadratic_loss(thetas):
    return sum(0.5 * (a * (t - c) ** 2).sum() for t, a, c in zip(thetas, CURV, CENTRE, strict=True))


def adabelief_by_hand(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=5e-4,
    *,
    eps_in_s=True,
    bias_correction=True,
    decoupled=False,
):
    """The seed's Algorithm 2 (defaults), or a deliberately wrong variant of it."""
    b1, b2 = betas
    thetas = [t.clone() for t in THETA0]
    m = [torch.zeros_like(t) for t in thetas]
    s = [torch.zeros_like(t) for t in thetas]
    for k in range(1, STEPS + 1):
        grads = quadratic_grads(thetas)
        for i, g in enumerate(grads):
            if decoupled:
                thetas[i] = thetas[i] * (1.0 - lr * weight_decay)
            else:
                g = g + weight_decay * thetas[i]
            m[i] = b1 * m[i] + (1.0 - b1) * g
            s[i] = b2 * s[i] + (1.0 - b2) * (g - m[i]) ** 2 + (eps if eps_in_s else 0.0)
            m_hat = m[i] / (1.0 - b1**k) if bias_correction else m[i]
            s_hat = s[i] / (1.0 - b2**k) if bias_correction else s[i]
            thetas[i] = thetas[i] - lr * m_hat / (torch.sqrt(s_hat) + eps)
    return thetas


def run_library(name, steps=STEPS, closure=False, **cfg):
    params = [torch.nn.Parameter(t.clone()) for t in THETA0]
    opt = build(name, params, **cfg)
    for _ in range(steps):
        opt.zero_grad()
        if closure:

            def closure_fn():
                loss = quadratic_loss(params)
                loss.backward()
                return loss

            opt.step(closure_fn)
        else:
            quadratic_loss(params).backward()
            opt.step()
    return [p.detach() for p in params]


def max_diff(xs, ys):
    return max((x - y).abs().max().item() for x, y in zip(xs, ys, strict=True))


@pytest.mark.parametrize("foreach", [False, True])
def test_adabelief_matches_published_algorithm(foreach):
    reference = adabelief_by_hand()
    ours = run_library("adabelief", foreach=foreach)
    assert max_diff(ours, reference) < 1e-12
    # The test has power: each plausible mistake moves the iterates by far more than its tolerance.
    wrong = {
        "rectified": run_library("adabelief", rectify=True),
        "decoupled decay": run_library("adabelief", weight_decouple=True),
        "decoupled fixed decay": run_library("adabelief", weight_decouple=True, fixed_decay=True),
        "library eps 1e-16": run_library("adabelief", eps=1e-16),
        "eps outside s (by hand)": adabelief_by_hand(eps_in_s=False),
        "no bias correction (by hand)": adabelief_by_hand(bias_correction=False),
    }
    for label, thetas in wrong.items():
        assert max_diff(thetas, reference) > 1e-9, label
    # The hand-written decoupled variant is the library's: the reference is not trivially different.
    assert max_diff(wrong["decoupled decay"], adabelief_by_hand(decoupled=True)) < 1e-12


@pytest.mark.parametrize("closure", [False, True])
def test_msvag_matches_balles_hennig_with_l2(closure):
    """M-SVAG: m, v EMAs of g, g^2 (one beta); theta -= lr * m^2 / (m^2 + rho * s) * m."""
    lr, beta, wd = 0.1, 0.9, 5e-4
    thetas = [t.clone() for t in THETA0]
    m = [torch.zeros_like(t) for t in thetas]
    v = [torch.zeros_like(t) for t in thetas]
    for k in range(1, STEPS + 1):
        bk = beta**k
        # rho = 1 at k = 1 (s is 0/0); the library caps it like this.
        rho = min((1 - beta) * (1 + bk) / ((1 + beta) * (1 - bk)), 0.9999)
        for i, g in enumerate(quadratic_grads(thetas)):
            g = g + wd * thetas[i]
            m[i] = beta * m[i] + (1 - beta) * g
            v[i] = beta * v[i] + (1 - beta) * g * g
            m_hat, v_hat = m[i] / (1 - bk), v[i] / (1 - bk)
            s = (v_hat - m_hat**2) / (1 - rho)
            gamma = (m_hat**2 / (m_hat**2 + rho * s)).nan_to_num(0.0).clamp(0.0, 1.0)
            thetas[i] = thetas[i] - lr * gamma * m_hat
    ours = run_library("msvag", closure=closure)
    assert max_diff(ours, thetas) < 1e-12
    assert max_diff(run_library("msvag", weight_decay=0.0), thetas) > 1e-6


def _logistic_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    w = torch.randn(10, generator=g)
    y = ((x @ w + 0.3 * torch.randn(128, generator=g)) > 0).float()
    return x, y


# Learning rates that make 30 steps decisive; the CIFAR defaults are checked further down.
FAST = {
    "adam": {"lr": 0.05},
    "adamw": {"lr": 0.05},
    "adabelief": {"lr": 0.05},
    "radam": {"lr": 0.3},
    "yogi": {"lr": 0.05},
    "adabound": {"lr": 0.05},
    "fromage": {"lr": 0.1},
    "sophiah": {"lr": 0.5, "p": 1.0},
}
SECOND_ORDER = {"adahessian", "sophiah"}


def _train(name, steps=30, **cfg):
    x, y = _logistic_problem()
    torch.manual_seed(1)
    model = torch.nn.Linear(10, 1)
    opt = build(name, model.parameters(), **cfg)

    def loss_fn():
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), y)

    with torch.no_grad():
        initial = loss_fn().item()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward(create_graph=step_protocol(opt) == "create_graph")
        opt.step()
    with torch.no_grad():
        final = loss_fn().item()
    return initial, final


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_every_baseline_reduces_logistic_loss(name):
    expected_protocol = "create_graph" if name in SECOND_ORDER else "backward"
    opt = build(name, torch.nn.Linear(2, 1).parameters())
    assert step_protocol(opt) == expected_protocol
    with warnings.catch_warnings():
        # torch warns about the reference cycle create_graph=True makes; expected here.
        warnings.simplefilter("ignore", UserWarning)
        initial, final = _train(name, **FAST.get(name, {}))
        assert math.isfinite(final) and final < 0.6 * initial, (initial, final)
        initial, final = _train(name)
        assert final < initial, ("defaults", initial, final)


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_second_order_needs_create_graph(name):
    torch.manual_seed(0)
    x, y = _logistic_problem()
    model = torch.nn.Linear(10, 1)
    opt = build(name, model.parameters())
    F.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
    with pytest.raises(RuntimeError):
        opt.step()


DEFAULTS = {
    "sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
    "adabelief": {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 5e-4,
        "weight_decouple": False,
        "rectify": False,
        "ams_bound": False,
    },
    "radam": {"lr": 1e-3, "eps": 1e-8, "weight_decay": 5e-4, "weight_decouple": True},
    "yogi": {"lr": 1e-3, "eps": 1e-3, "weight_decay": 5e-4, "weight_decouple": False},
    "adabound": {
        "lr": 1e-3,
        "final_lr": 0.1,
        "gamma": 1e-3,
        "weight_decay": 5e-4,
        "weight_decouple": False,
    },
    "msvag": {"lr": 0.1, "beta": 0.9, "weight_decay": 5e-4},
    "fromage": {"lr": 1e-2, "weight_decay": 0.0},
    "adahessian": {"lr": 0.15, "eps": 1e-4, "weight_decay": 5e-4},
    "sophiah": {"lr": 6e-2, "weight_decay": 5e-4},
}


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_defaults_are_the_papers_and_cfg_overrides_them(name):
    group = build(name, [torch.nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert {k: group[k] for k in DEFAULTS[name]} == DEFAULTS[name]
    group = build(name, [torch.nn.Parameter(torch.zeros(2))], lr=0.123).param_groups[0]
    assert group["lr"] == 0.123


def test_radam_degenerates_to_sgd_like_the_papers_code():
    assert build("radam", [torch.nn.Parameter(torch.zeros(2))]).degenerated_to_sgd is True


def test_sgd_nesterov_reaches_the_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build("sgd", [p], nesterov=True, momentum=0.8, lr=0.5, weight_decay=0.1)
    assert opt.param_groups[0]["nesterov"] is True
    assert opt.param_groups[0]["momentum"] == 0.8
    p.grad = torch.tensor([0.3, 0.4], dtype=torch.float64)
    expected = p.detach() - 0.5 * (1 + 0.8) * (p.grad + 0.1 * p.detach())
    opt.step()
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_adamw_weight_decay_is_decoupled():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build("adamw", [p], weight_decay=0.05, lr=0.1)
    assert opt.param_groups[0]["weight_decay"] == 0.05
    # With a zero gradient only the decay moves theta: theta *= 1 - lr * wd (L2 would step by ~lr).
    p.grad = torch.zeros_like(p)
    expected = p.detach() * (1 - 0.1 * 0.05)
    opt.step()
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)


def test_l2_wrapper_keeps_per_group_weight_decay():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = build("msvag", [{"params": [a], "weight_decay": 0.0}, {"params": [b]}])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4]


def test_every_baseline_config_has_its_published_defaults():
    assert set(BASELINE_NAMES) == set(DEFAULTS)
