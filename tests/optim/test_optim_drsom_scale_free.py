"""DRSOM's scale-free options (step measure, radius rule, schedule, lr_h, preconditioned
directions): each test asserts a number a wrong implementation misses."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from drsom.optim import DRSOM
from drsom.optim.control import make_controller
from drsom.optim.subproblem import ReducedModel

F64 = torch.float64
HP = dict(zeta1=0.25, zeta2=0.75, shrink=0.25, expand=2.0)


def _point(n=40, seed=0):
    """A start x, the closure at x, and the same loss of any point."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dtype=F64, generator=g).requires_grad_()
    w = torch.rand(n, dtype=F64, generator=g) + 0.5
    b = torch.randn(n, dtype=F64, generator=g)

    def loss(z):
        return (w * z.pow(4)).sum() / 4 + b @ z

    return x, lambda: loss(x), loss


def _flat(x):
    return x.detach().clone()


# --------------------------------------------------------------------------- step measure
def test_rms_bound_is_the_euclidean_bound_over_sqrt_n():
    # a linear loss: the model has no curvature, every step lands on the bound
    n = 64
    b = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(3))
    runs = {}
    for measure, lr in (("rms", 0.01), ("euclidean", 0.01 * math.sqrt(n))):
        x = torch.zeros(n, dtype=F64, requires_grad=True)
        opt = DRSOM([x], lr=lr, hessian="hvp", directions="gradient", step_measure=measure)
        opt.step(lambda x=x: b @ x)
        runs[measure] = (_flat(x), opt.last_step["radius"])
    torch.testing.assert_close(runs["rms"][0], runs["euclidean"][0], rtol=1e-12, atol=0)
    assert runs["rms"][0].norm().item() == pytest.approx(0.01 * math.sqrt(n), rel=1e-12)
    assert runs["rms"][1] == pytest.approx(0.01, rel=1e-12)  # the radius is reported in RMS units


# --------------------------------------------------------------------------- radius rules
def _interior_model():
    # minimiser at alpha = 0.5 (|alpha| = 0.5 < radius 1): an interior step
    return ReducedModel(np.array([-1.0]), np.eye(1), np.array([[2.0]]))


@pytest.mark.parametrize(
    ("rule", "rho", "expected"),
    [
        ("seed", 0.5, 1.0),  # rho in (zeta1, zeta2): the seed's radius stays
        ("seed", 0.9, 1.0),  # rho > zeta2 but interior: still stays
        ("good", 0.5, 2.0),  # any good step expands x2
        ("good", 0.9, 2.0),
        ("last_step", 0.5, 1.0),  # 2 x |step| = 2 x 0.5
        ("seed", 0.1, 0.125),  # every rule shrinks to 0.25 min(radius, |step|) on rho < zeta1
        ("good", 0.1, 0.125),
        ("last_step", 0.1, 0.125),
    ],
)
def test_radius_rules_on_an_interior_step(rule, rho, expected):
    model = _interior_model()
    ctrl = make_controller("trust_region", radius=1.0, gamma=1.0, sigma=None, radius_rule=rule)
    ctrl.start(model, 1.0, 10.0)
    sol = ctrl.propose(model, 10.0, HP, 1.0)
    assert sol.norm == pytest.approx(0.5) and not sol.boundary
    ctrl.update(model, sol, rho, True, 10.0, HP, 1.0)
    assert ctrl.value == pytest.approx(expected, rel=1e-12)


def test_good_rule_stops_at_the_bound():
    model = _interior_model()
    ctrl = make_controller("trust_region", radius=1.0, gamma=1.0, sigma=None, radius_rule="good")
    for _ in range(5):
        ctrl.start(model, 1.0, 3.0)
        ctrl.update(model, ctrl.propose(model, 3.0, HP, 1.0), 0.5, True, 3.0, HP, 1.0)
    assert ctrl.value == 3.0


@pytest.mark.parametrize(("follow", "expected"), [(True, 0.1), (False, 0.2)])
def test_follow_schedule_scales_the_radius_with_the_bound(follow, expected):
    model = _interior_model()
    ctrl = make_controller(
        "trust_region", radius=0.2, gamma=1.0, sigma=None, follow_schedule=follow
    )
    ctrl.start(model, 0.2, 1.0)
    ctrl.start(model, 0.2, 0.5)  # the schedule halves the bound; the radius sits below it
    assert ctrl.value == pytest.approx(expected, rel=1e-12)
    again = make_controller(
        "trust_region", radius=9.0, gamma=1.0, sigma=None, follow_schedule=follow
    )
    again.load_state_dict(ctrl.state_dict())
    again.start(model, 9.0, 0.05)  # a checkpoint keeps the bound it last saw
    assert again.value == pytest.approx(expected * (0.1 if follow else 1.0), rel=1e-12)


def test_follow_schedule_through_a_scheduler():
    torch.manual_seed(0)
    X, y = torch.randn(64, 10), (torch.rand(64) > 0.5).float()
    radii = {}
    for follow in (False, True):
        torch.manual_seed(1)
        model = nn.Linear(10, 1)
        opt = DRSOM(model.parameters(), lr=1.0, radius=0.01, follow_schedule=follow)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

        def closure(model=model):
            return nn.functional.binary_cross_entropy_with_logits(model(X)[:, 0], y)

        out = []
        for _ in range(4):
            opt.step(closure)
            out.append(opt.last_step["radius"])
            sched.step()
        radii[follow] = out
    # the radius (0.01, doubling on each boundary step) sits far below the bound: without
    # follow_schedule the halved bound (0.5) changes nothing; with it step 3 starts at half
    assert radii[True][:2] == radii[False][:2] == pytest.approx([0.02, 0.04], rel=1e-12)
    assert radii[False][2:] == pytest.approx([0.08, 0.16], rel=1e-12)
    assert radii[True][2:] == pytest.approx([0.04, 0.08], rel=1e-12)


# --------------------------------------------------------------------------- curvature scale
def test_lr_h_divides_the_diagonal_curvature():
    Qs = {}
    for lr_h in (1.0, 1e-3):
        x, f, _ = _point(seed=4)
        opt = DRSOM([x], hessian="adabelief", lr_h=lr_h)
        Qs[lr_h] = opt.subspace_model(f)["Q"]
    np.testing.assert_allclose(Qs[1e-3], Qs[1.0] / 1e-3, rtol=1e-12)


# --------------------------------------------------------------------------- preconditioning
def test_preconditioned_row_is_adams_direction():
    # two steps, so that m_hat and v_hat average two gradients as Adam's do
    x, f, loss = _point(seed=5)
    b1, b2, eps = 0.8, 0.99, 1e-3
    opt = DRSOM([x], hessian="hvp", directions="preconditioned", betas=(b1, b2), eps=eps)

    def grad():
        return torch.autograd.grad(loss(x), x)[0].detach()

    g1 = grad()
    opt.step(f)
    g2 = grad()
    m = opt.subspace_model(f)
    m_hat = ((1 - b1) * b1 * g1 + (1 - b1) * g2) / (1 - b1**2)
    v_hat = ((1 - b2) * b2 * g1**2 + (1 - b2) * g2**2) / (1 - b2**2)
    p = m_hat / (v_hat.sqrt() + eps)
    V = torch.stack([g2, p]).numpy()
    np.testing.assert_allclose(m["G"][:2, :2], V @ V.T, rtol=1e-10)
    np.testing.assert_allclose(m["c"][:2], V @ g2.numpy(), rtol=1e-10)
    assert opt.state_dict()["state"]["drsom"]["directions"]["t"] == 2


def test_preconditioned_only_first_step_is_adams_first_step():
    # Q = diag(|g| + eps) / lr_h along P g = g / (|g| + eps): the model's minimiser is lr_h P g
    x, f, loss = _point(seed=6)
    x0 = _flat(x)
    opt = DRSOM(
        [x], lr=1.0, hessian="adam", directions="preconditioned_only", step_measure="rms",
        lr_h=1e-2, weight_decay=0.0,
    )  # fmt: skip
    opt.step(f)
    assert opt.last_step["accepted"]
    assert opt.last_step["alpha"][0] == 0.0  # the raw gradient is left out of the subspace
    y = x0.clone().requires_grad_()
    adam = torch.optim.Adam([y], lr=1e-2)
    loss(y).backward()
    adam.step()
    moved = (y.detach() - x0).abs()
    assert moved.min() > 1e-3  # Adam's first step moves every coordinate by about lr
    torch.testing.assert_close(_flat(x), y.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("lr", "hessian", "same"),
    [
        (1.0, "adam", True),  # the model's minimiser lr_h P g is in span{P g}: g adds nothing
        (1e-3, "adam", False),  # the bound binds: the constrained minimiser mixes g and P g
        (1.0, "hvp", False),  # exact curvature: its minimiser is not along P g
    ],
)
def test_the_raw_gradient_matters_only_where_the_model_uses_it(lr, hessian, same):
    out = {}
    for name in ("preconditioned", "preconditioned_only"):
        x, f, _ = _point(seed=7)
        lr_h = 1e-2 if hessian == "adam" else 1.0
        opt = DRSOM([x], lr=lr, hessian=hessian, directions=name, step_measure="rms", lr_h=lr_h)
        opt.step(f)
        out[name] = (_flat(x), opt.last_step["pred"], opt.last_step["alpha"][0])
    (x_g, pred_g, a_g), (x_p, pred_p, a_p) = out["preconditioned"], out["preconditioned_only"]
    assert a_p == 0.0
    if same:
        torch.testing.assert_close(x_g, x_p, rtol=1e-10, atol=1e-12)
        assert abs(a_g) < 1e-10
    else:
        assert abs(a_g) > 1e-8
        assert pred_g > pred_p * (1 + 1e-6)  # a larger subspace predicts more decrease


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(directions="preconditioned", step_measure="rms", radius_rule="good", lr_h=1e-2),
        dict(directions="preconditioned_only", radius_rule="last_step", momentum_ema=0.5),
    ],
)
def test_scale_free_state_round_trip_continues_identically(kwargs):
    import copy

    torch.manual_seed(0)
    X, y = torch.randn(100, 10), (torch.rand(100) > 0.5).float()

    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))
        opt = DRSOM(model.parameters(), lr=0.05, follow_schedule=True, **kwargs)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    def run(model, opt, sched, steps):
        out = []
        for _ in range(steps):
            opt.step(lambda: nn.functional.binary_cross_entropy_with_logits(model(X)[:, 0], y))
            sched.step()
            out.append((opt.last_step["loss"], opt.last_step["radius"]))
        return out

    model, opt, sched = make()
    run(model, opt, sched, 4)
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    saved_sched = sched.state_dict()
    tail = run(model, opt, sched, 6)
    model2, opt2, sched2 = make()
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved_sched)
    assert run(model2, opt2, sched2, 6) == tail
    assert opt2.state_dict()["state"]["drsom"]["R"].equal(opt.state_dict()["state"]["drsom"]["R"])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        (
            dict(step_measure="l2"),
            "DRSOM: step_measure='l2' is not one of 'euclidean', 'rms'",
        ),
        (
            dict(radius_rule="always"),
            "DRSOM: radius_rule='always' is not one of 'seed', 'good', 'last_step'",
        ),
        (
            dict(follow_schedule="yes"),
            "DRSOM: follow_schedule must be true or false, got 'yes'",
        ),
        (dict(lr_h=0.0), "DRSOM: lr_h must be a positive finite number, got 0.0"),
        (
            dict(hessian="hvp", lr_h=1e-3),
            "DRSOM: lr_h scales the diagonal curvature (hessian='adam' or 'adabelief'); "
            "hessian='hvp' measures the curvature itself, so lr_h must be 1, got 0.001",
        ),
        (
            dict(subproblem="regularized", radius_rule="good"),
            "DRSOM: radius_rule and follow_schedule shape the trust radius; "
            "subproblem='regularized' has none (use subproblem='trust_region', or "
            "radius_rule='seed' and follow_schedule=false)",
        ),
    ],
)
def test_bad_scale_free_arguments_are_one_line(kwargs, line):
    with pytest.raises(ValueError) as err:
        DRSOM([torch.zeros(2, requires_grad=True)], **kwargs)
    assert str(err.value) == line
