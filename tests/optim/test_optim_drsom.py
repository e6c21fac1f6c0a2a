"""DRSOM as an optimizer: each test asserts a number that a wrong implementation misses."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from drsom.optim import DRSOM, build, make_closure
from drsom.optim.control import make_controller
from drsom.optim.curvature import HESSIANS, make_curvature
from drsom.optim.directions import DIRECTIONS, make_directions
from drsom.optim.subproblem import ReducedModel

F64 = torch.float64


def _quadratic(n=50, cond=1e3, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = torch.tensor(U @ np.diag(np.logspace(0, math.log10(cond), n)) @ U.T)
    b = torch.tensor(rng.standard_normal(n))
    return A, b


def _cg_steps(A, b, tol):
    x = torch.zeros_like(b)
    r = b - A @ x
    p, r0 = r.clone(), r.norm()
    for it in range(10 * len(b)):
        Ap = A @ p
        a = (r @ r) / (p @ Ap)
        x = x + a * p
        rn = r - a * Ap
        if rn.norm() / r0 < tol:
            return it + 1
        p = rn + (rn @ rn) / (r @ r) * p
        r = rn
    raise AssertionError("CG did not converge")


def remember(opt: DRSOM, dirs: torch.Tensor) -> None:
    """Give ``opt`` the direction memory ``dirs`` (rows) through its saved state, as a restored
    run would have it: the state dict is the public way in."""
    sd = opt.state_dict()
    own = sd["state"]["drsom"]
    own["R"][: len(dirs)] = dirs
    own["directions"]["filled"] = len(dirs)
    opt.load_state_dict(sd)


# --------------------------------------------------------------------------- curvature sources
@pytest.mark.parametrize("hessian", ["hvp", "fd", "interp"])
@pytest.mark.parametrize("k", [2, 3])
def test_sources_reproduce_VAV_on_a_quadratic(hessian, k):
    A, b = _quadratic(20, cond=50, seed=k)
    x = torch.randn(20, dtype=F64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    opt = DRSOM([x], hessian=hessian, directions="history", history=k - 1, lr=10.0)
    dirs = torch.randn(k - 1, 20, dtype=F64, generator=torch.Generator().manual_seed(2))
    remember(opt, dirs)

    def f():
        return 0.5 * x @ A @ x + b @ x

    m = opt.subspace_model(f)
    V = torch.cat([(A @ x.detach() + b)[None], dirs]).numpy()
    expected = V @ A.numpy() @ V.T
    tol = 1e-10 if hessian == "hvp" else 1e-6
    np.testing.assert_allclose(m["Q"], expected, rtol=tol, atol=tol * np.abs(expected).max())
    np.testing.assert_allclose(m["G"], V @ V.T, rtol=1e-12)
    np.testing.assert_allclose(m["c"], V @ V[0], rtol=1e-12)


@pytest.mark.parametrize("hessian", ["adam", "adabelief"])
def test_diagonal_sources_equal_V_diag_h_V(hessian):
    torch.manual_seed(0)
    x = torch.randn(30, dtype=F64, requires_grad=True)
    w = torch.randn(30, dtype=F64)
    opt = DRSOM([x], hessian=hessian, betas=(0.9, 0.99), eps=1e-8)
    d = torch.randn(30, dtype=F64)
    remember(opt, d[None])

    def f():
        return (w * x).pow(2).sum() + x.sum()

    m = opt.subspace_model(f)
    g = (2 * w * w * x + 1).detach()
    if hessian == "adam":  # t = 1: v_hat = g^2
        h = g.abs() + 1e-8
    else:  # m = 0.1 g, s = 0.01 (0.9 g)^2 + eps, s_hat = s / 0.01
        h = ((0.01 * (0.9 * g) ** 2 + 1e-8) / 0.01).sqrt() + 1e-8
    V = torch.stack([g, d])
    np.testing.assert_allclose(m["Q"], (V * h) @ V.T, rtol=1e-12)


# --------------------------------------------------------------------------- convex quadratic
def test_exact_Q_momentum_matches_conjugate_gradients():
    A, b = _quadratic(50, cond=1e3)
    tol = 1e-10
    cg = _cg_steps(A, b, tol)
    x = torch.zeros(50, dtype=F64, requires_grad=True)
    opt = DRSOM([x], hessian="hvp", directions="momentum", lr=1e3)
    g0 = b.norm()
    rhos = []
    for step in range(1, 3000):
        opt.step(lambda: 0.5 * x @ A @ x - b @ x)
        info = opt.last_step
        assert info["accepted"], f"step {step} rejected (rho={info['rho']})"
        if info["pred"] > 1e-9:  # above round-off the model is exact
            rhos.append(info["rho"])
        if ((A @ x.detach() - b).norm() / g0) < tol:
            break
    assert abs(np.array(rhos) - 1).max() < 1e-4
    # conjugate gradients' count (about 100 here); gradient descent needs tens of thousands
    assert step <= 1.3 * cg, (step, cg)


def test_gradient_only_is_exact_line_search_steepest_descent():
    A, b = _quadratic(10, cond=10)
    x = torch.zeros(10, dtype=F64, requires_grad=True)
    opt = DRSOM([x], hessian="hvp", directions="gradient", lr=1e3)
    opt.step(lambda: 0.5 * x @ A @ x - b @ x)
    g = -b  # gradient at 0
    t = (g @ g) / (g @ A @ g)  # Cauchy step
    torch.testing.assert_close(x.detach(), -t * g, rtol=1e-12, atol=1e-14)


def test_ratio_test_stays_sound_at_round_off():
    # at the minimiser every decrease is round-off: steps must keep being accepted
    A, b = _quadratic(10, cond=10)
    xstar = torch.linalg.solve(A, b)
    x = (xstar + 1e-9).clone().requires_grad_()
    opt = DRSOM([x], hessian="hvp", lr=1.0)
    for _ in range(20):
        opt.step(lambda: 0.5 * x @ A @ x - b @ x)
    assert opt.counts["accepted"] == 20
    assert (x.detach() - xstar).norm() < 1e-12


# --------------------------------------------------------------------------- logistic regression
def _logistic(seed=0, n=200, d=10):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = (X @ w + 0.5 * torch.randn(n, generator=g) > 0).float()
    return X, y


@pytest.mark.parametrize("directions", DIRECTIONS)
@pytest.mark.parametrize("hessian", HESSIANS)
def test_every_combination_reduces_logistic_loss(hessian, directions):
    torch.manual_seed(0)
    X, y = _logistic()
    model = nn.Linear(10, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = DRSOM(model.parameters(), hessian=hessian, directions=directions, lr=1.0, history=2)
    loss_fn = nn.BCEWithLogitsLoss()

    def closure():
        return loss_fn(model(X).squeeze(1), y)

    first = closure().item()  # log 2
    for _ in range(25):
        opt.step(closure)
    assert closure().item() < 0.55 * first, (hessian, directions, closure().item())


@pytest.mark.parametrize("subproblem", ["trust_region", "regularized", "cubic"])
@pytest.mark.parametrize("hessian", ["hvp", "adam"])
def test_every_subproblem_reduces_logistic_loss(subproblem, hessian):
    torch.manual_seed(0)
    X, y = _logistic(1)
    model = nn.Linear(10, 1)
    opt = DRSOM(model.parameters(), hessian=hessian, subproblem=subproblem, lr=2.0)
    loss_fn = nn.BCEWithLogitsLoss()

    def closure():
        return loss_fn(model(X).squeeze(1), y)

    first = closure().item()
    for _ in range(25):
        opt.step(closure)
    assert closure().item() < 0.6 * first


# --------------------------------------------------------------------------- weight decay, groups
@pytest.mark.parametrize("hessian", ["hvp", "fd", "interp"])
def test_weight_decay_is_consistent_with_an_explicit_L2_term(hessian):
    X, y = _logistic(2)
    X, y = X.double(), y.double()
    w = 0.05
    runs = []
    for decay_in_optimizer in (True, False):
        torch.manual_seed(0)
        p = torch.randn(10, dtype=F64, requires_grad=True)
        opt = DRSOM([p], hessian=hessian, lr=1.0, weight_decay=w if decay_in_optimizer else 0.0)

        def closure(p=p, explicit=not decay_in_optimizer):
            loss = nn.functional.binary_cross_entropy_with_logits(X @ p, y)
            return loss + 0.5 * w * (p * p).sum() if explicit else loss

        for _ in range(8):
            opt.step(closure)
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=1e-8)


def test_param_groups_and_parameters_without_gradient():
    torch.manual_seed(0)
    used, other, unused = nn.Linear(4, 1), nn.Linear(4, 1), nn.Linear(4, 1)
    before = [p.detach().clone() for p in unused.parameters()]
    opt = DRSOM(
        [
            {"params": used.parameters(), "weight_decay": 0.1},
            {"params": list(other.parameters()) + list(unused.parameters())},
        ],
        hessian="fd",
    )
    X = torch.randn(32, 4)
    start = None
    for _ in range(5):

        def closure():
            return (used(X) + other(X)).pow(2).mean()

        loss = opt.step(closure)
        start = start if start is not None else loss.item()
    for p, q in zip(unused.parameters(), before, strict=True):
        assert torch.equal(p.detach(), q)
    assert closure().item() < 0.5 * start
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_float32_and_channels_last_layout_is_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(8, 3, 6, 6)
    model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x)
    opt = DRSOM(model.parameters())
    w = model[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x), out)
    # every parameter is a view of the optimizer's flat buffer
    assert all(
        p.untyped_storage().data_ptr() == opt._flat.untyped_storage().data_ptr()
        for p in model.parameters()
    )
    opt.step(lambda: model(x).pow(2).mean())
    assert opt.last_step["accepted"]


# --------------------------------------------------------------------------- state, schedule
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hessian="adam", directions="random"),
        dict(hessian="adabelief", directions="history", history=2),
        dict(hessian="interp", directions="momentum", subproblem="regularized"),
        dict(hessian="fd", directions="momentum", subproblem="cubic"),
    ],
)
def test_state_dict_round_trip_continues_identically(kwargs):
    X, y = _logistic(3)

    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1))
        return model, DRSOM(model.parameters(), lr=0.5, seed=7, **kwargs)

    def run(model, opt, steps):
        losses = []
        for _ in range(steps):
            opt.step(lambda: nn.functional.binary_cross_entropy_with_logits(model(X)[:, 0], y))
            losses.append(opt.last_step["loss"])
        return losses

    model, opt = make()
    run(model, opt, 4)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    import copy
    import io

    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    tail = run(model, opt, 6)
    final = [p.detach().clone() for p in model.parameters()]

    model2, opt2 = make()
    model2.load_state_dict(saved)
    buf.seek(0)
    opt2.load_state_dict(copy.deepcopy(torch.load(buf, weights_only=False)))
    assert run(model2, opt2, 6) == tail
    for p, q in zip(model2.parameters(), final, strict=True):
        assert torch.equal(p.detach(), q)
    assert opt2.counts == opt.counts


def test_lr_scheduler_decays_the_step_bound():
    torch.manual_seed(0)
    X, y = _logistic(4)
    model = nn.Linear(10, 1)
    opt = DRSOM(model.parameters(), lr=1.0, radius=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.01)

    def closure():
        return nn.functional.binary_cross_entropy_with_logits(model(X)[:, 0], y)

    for _ in range(3):
        opt.step(closure)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    eps = torch.finfo(torch.float32).eps
    for _ in range(3):
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        opt.step(closure)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        # |x+ - x| = 0.01 in exact arithmetic; storing x + s in float32 rounds each entry by
        # eps/2 |x_i| (measured: at most 0.37 eps (|x| + 0.01) over 300 seeds), so the float64
        # difference of the float32 iterates gets a float32-sized allowance
        step = (after.double() - before.double()).norm().item()
        assert step <= 0.01 * (1 + 4 * eps) + 2 * eps * before.norm().item()
        assert step > 0.5 * 0.01  # the bound binds: the step is not just small
        assert opt.last_step["radius"] <= 0.01


def test_official_preset_constants():
    p = torch.zeros(2, requires_grad=True)
    opt = build("drsom_official", [p])  # configs/optimizer/drsom_official.yaml
    g = opt.param_groups[0]
    assert (g["eta"], g["zeta1"], g["zeta2"]) == (0.08, 0.25, 0.75)
    assert (g["gamma_inc"], g["gamma_dec"], g["lr"]) == (50.0, 30.0, 10.0)
    assert opt._ctrl.value == 1e-6 and opt._dirs.ema == 0.3 and opt.subproblem == "regularized"


# --------------------------------------------------------------------------- hygiene
def test_batchnorm_statistics_updated_once_per_step_and_dropout_fixed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    X, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    reference = nn.Sequential(*[m for m in __import__("copy").deepcopy(model)])
    torch.manual_seed(1)
    reference(X)  # one forward: what a first-order step does to the running statistics
    rng_after_one_forward = torch.get_rng_state()

    opt = DRSOM(model.parameters(), hessian="interp", max_trials=5)
    torch.manual_seed(1)
    closure = make_closure(model, nn.functional.cross_entropy, X, y)
    opt.step(closure)
    assert closure.calls >= 3  # gradient, an interpolation point, trial(s)
    bn, ref = model[1], reference[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert bn.num_batches_tracked.item() == 1
    assert torch.equal(torch.get_rng_state(), rng_after_one_forward)
    # the same parameters give the same loss in every evaluation (same dropout masks)
    fresh = make_closure(model, nn.functional.cross_entropy, X, y)
    first, again = fresh().item(), fresh().item()
    assert first == again
    # second step: two directions, so three interpolation points; still one update of the stats
    closure = make_closure(model, nn.functional.cross_entropy, X, y)
    opt.step(closure)
    assert closure.calls >= 5 and opt.last_step["k"] == 2
    assert bn.num_batches_tracked.item() == 3  # step 1, the fresh closure's first call, step 2
    assert model(X).sum().item() != model(X).sum().item()  # dropout is live in train mode


def test_random_direction_is_orthogonal_to_gradient_and_seeded():
    X, y = _logistic(5)
    finals = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Linear(10, 1)
        opt = DRSOM(model.parameters(), directions="random", seed=3)
        for _ in range(3):
            opt.step(lambda m=model: nn.functional.binary_cross_entropy_with_logits(m(X)[:, 0], y))
            g, u = opt._R[0], opt._R[1]
            assert abs(torch.dot(g, u)) <= 1e-6 * g.norm() * u.norm()
            assert u.norm() > 0.5 * math.sqrt(u.numel() - 1)
        finals.append(model.weight.detach().clone())
    assert torch.equal(finals[0], finals[1])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(hessian="newton"), "hessian"),
        (dict(directions="conjugate"), "directions"),
        (dict(subproblem="line_search"), "subproblem"),
        (dict(radius=-1.0), "radius"),
        (dict(history=-2), "history"),
        (dict(lr=0.0), "lr"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DRSOM([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_closures():
    p = torch.zeros(3, requires_grad=True)
    opt = DRSOM([p])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: p * 2)
    with pytest.raises(ValueError, match="does not depend on the parameters"):
        opt.step(lambda: torch.tensor(1.0))


def test_non_finite_trial_is_rejected_never_written():
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    target = torch.tensor([4.0, 4.0])

    def closure():
        # the minimiser lies outside a box where the loss is NaN: the Newton step must fail
        loss = ((p - target) ** 2).sum()
        return torch.where(p.detach().abs().max() > 2.5, torch.tensor(math.nan), loss)

    opt = DRSOM([p], hessian="hvp", lr=10.0, radius=10.0, max_trials=8)
    start = closure().item()
    opt.step(closure)
    assert torch.isfinite(p).all()
    assert opt.last_step["trials"] >= 2 and opt.last_step["accepted"]
    assert closure().item() < start


# --------------------------------------------------------------------------- a tiny CNN
def _images(n, seed):
    """Four classes of 3x8x8 images: a class colour plus a class-placed bright square, in noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 2.0 * torch.randn(n, 3, 8, 8, generator=g)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    x += colours[y][:, :, None, None]
    for i, c in enumerate(y.tolist()):
        r, s = divmod(c, 2)
        x[i, :, 4 * r : 4 * r + 3, 4 * s : 4 * s + 3] += 1.0
    return x, y


SEED = "drsom_seed"
VARIANTS = [
    *[dict(config=SEED, hessian=h) for h in HESSIANS],
    dict(config=SEED, directions="gradient"),
    dict(config=SEED, directions="history", history=3),
    dict(config=SEED, directions="random"),
    dict(config=SEED, subproblem="regularized"),
    dict(config=SEED, subproblem="cubic"),
    dict(config="drsom_official", hessian="fd"),
    # 24 steps only: the default's RMS bound (3e-4, for 30-epoch runs) x10, as Adam's lr would be
    dict(config="drsom", lr=3e-3),
    dict(config="drsom", lr=3e-3, directions="preconditioned_only", radius_rule="last_step"),
    dict(config="drsom", hessian="adabelief", step_measure="euclidean", lr=0.05),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_tiny_cnn_learns_with_every_variant(variant):
    torch.manual_seed(0)
    X, y = _images(384, seed=0)
    Xt, yt = _images(256, seed=1)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(128, 4),
    )
    settings = dict(variant)
    opt = build(settings.pop("config"), model.parameters(), **settings)
    for _epoch in range(2):
        for i in range(0, len(X), 32):
            closure = make_closure(model, nn.functional.cross_entropy, X[i : i + 32], y[i : i + 32])
            opt.step(closure)
            assert torch.isfinite(closure.loss)
    assert model[1].num_batches_tracked.item() == opt.counts["steps"]
    model.eval()
    with torch.no_grad():
        acc = (model(Xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.6, acc  # chance is 0.25


# --------------------------------------------------------------------------- host synchronisation
# (numpy() is left out: it only views a host tensor, and raises on a CUDA one)
_SYNCING = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__", "to")


@pytest.mark.parametrize("hessian", HESSIANS)
def test_one_host_sync_per_step_plus_one_per_trial(hessian, monkeypatch):
    """Count every tensor->host conversion during a step (on CPU they stand for CUDA syncs)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    X, y = torch.randn(16, 3, 6, 6), torch.randint(0, 3, (16,))
    model(X)
    opt = DRSOM(model.parameters(), hessian=hessian, max_trials=4)
    for _ in range(2):  # warm up: momentum exists, k = 2
        opt.step(make_closure(model, nn.functional.cross_entropy, X, y))
    calls = []
    for name in _SYNCING:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    opt.step(make_closure(model, nn.functional.cross_entropy, X, y))
    monkeypatch.undo()
    assert opt.last_step["k"] == 2
    assert len(calls) == 1 + opt.last_step["trials"], calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("hessian", HESSIANS)
def test_cuda_step_syncs_only_where_it_must(hessian):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))
    model = model.cuda()
    X, y = torch.randn(16, 3, 6, 6, device="cuda"), torch.randint(0, 3, (16,), device="cuda")
    opt = DRSOM(model.parameters(), hessian=hessian, max_trials=1)
    for _ in range(2):
        opt.step(make_closure(model, nn.functional.cross_entropy, X, y))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        import warnings

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            opt.step(make_closure(model, nn.functional.cross_entropy, X, y))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in seen if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1 + opt.last_step["trials"], [str(w.message) for w in syncs]


# ------------------------------------------------------------------ the parts own their state
@pytest.mark.parametrize(
    ("make", "line"),
    [
        (
            lambda: make_curvature("exact", betas=(0.9, 0.999), eps=1e-8, interp_step=1e-2),
            "DRSOM: hessian='exact' is not one of 'hvp', 'fd', 'interp', 'adam', 'adabelief'",
        ),
        (
            lambda: make_directions("conjugate", history=3, ema=0.0),
            "DRSOM: directions='conjugate' is not one of 'gradient', 'momentum', 'history', "
            "'random', 'preconditioned', 'preconditioned_only'",
        ),
        (
            lambda: make_controller("line_search", radius=1.0, gamma=1e-6, sigma=None),
            "DRSOM: subproblem='line_search' is not one of 'trust_region', 'regularized', 'cubic'",
        ),
    ],
)
def test_each_part_factory_refuses_unknown_names(make, line):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == line


@pytest.mark.parametrize("hessian", ["adam", "adabelief"])
def test_diagonal_source_saves_loads_and_resets_its_averages(hessian):
    R = torch.randn(2, 300, dtype=F64)
    src = make_curvature(hessian, betas=(0.9, 0.999), eps=1e-8, interp_step=1e-2)
    for _ in range(3):
        src.gram(R)
        R[0].normal_()
    copy = make_curvature(hessian, betas=(0.9, 0.999), eps=1e-8, interp_step=1e-2)
    copy.load_state_dict(src.state_dict(), like=R)
    assert copy.state_dict()["t"] == 3
    torch.testing.assert_close(copy.gram(R), src.gram(R), rtol=0, atol=0)
    torch.testing.assert_close(copy.quadratic(None, R, None), src.quadratic(None, R, None))
    src.reset()
    assert src.state_dict()["t"] == 0
    assert all(buf.eq(0).all() for buf in src.per_element().values())
    fresh = make_curvature(hessian, betas=(0.9, 0.999), eps=1e-8, interp_step=1e-2)
    fresh.gram(R)
    src.gram(R)  # after a reset the source is a fresh one
    torch.testing.assert_close(src.quadratic(None, R, None), fresh.quadratic(None, R, None))


@pytest.mark.parametrize(
    ("name", "key"), [("trust_region", "radius"), ("regularized", "gamma"), ("cubic", "sigma")]
)
def test_controllers_save_load_and_report_their_parameter(name, key):
    model = ReducedModel(np.array([1.0, -2.0]), np.eye(2), np.diag([1.0, -0.5]))
    ctrl = make_controller(name, radius=0.7, gamma=1e-3, sigma=None)
    saved = ctrl.state_dict()  # before the first step: the cubic weight is not balanced yet
    ctrl.start(model, 0.7)
    hp = dict(zeta1=0.25, zeta2=0.75, shrink=0.25, expand=2.0, gamma_min=1e-8, gamma_inc=50.0)
    hp.update(gamma_dec=30.0, gamma_fail_min=1e-4, sigma_min=1e-12)
    sol = ctrl.propose(model, 1.0, hp, 1.0)
    ctrl.update(model, sol, -1.0, False, 1.0, hp, 1.0)  # a rejection changes the parameter
    after = ctrl.diagnostics()
    assert set(after) == {key} and after[key] > 0 and ctrl.state_dict()[key] == after[key]

    again = make_controller(name, radius=5.0, gamma=1.0, sigma=3.0)
    again.load_state_dict(ctrl.state_dict())
    assert again.diagnostics() == after
    early = make_controller(name, radius=5.0, gamma=1.0, sigma=3.0)
    early.load_state_dict(saved)
    early.start(model, 0.7)
    assert early.propose(model, 1.0, hp, 1.0).norm == pytest.approx(sol.norm, rel=1e-12)


def test_history_saves_and_loads_its_ring():
    R = torch.zeros(4, 5, dtype=F64)
    dirs = make_directions("history", history=3, ema=0.0)
    for _ in range(4):
        R[0].normal_()
        dirs.accept(R, [0.5, 0.1, 0.0, 0.0][: dirs.active()])
    again = make_directions("history", history=3, ema=0.0)
    again.load_state_dict(dirs.state_dict())
    assert again.active() == dirs.active() == 4
    assert again.state_dict() == dirs.state_dict() == {"filled": 3, "next": 2}
    assert again.diagnostics() == {"memory": 3.0}


def test_cubic_state_saved_before_the_first_step_loads():
    torch.manual_seed(0)
    X, y = torch.randn(16, 4), torch.randn(16, 1)
    model, other = nn.Linear(4, 1), nn.Linear(4, 1)
    opt = DRSOM(model.parameters(), subproblem="cubic")
    again = DRSOM(other.parameters(), subproblem="cubic")
    again.load_state_dict(opt.state_dict())  # sigma is still unset (None) here
    again.step(lambda: nn.functional.mse_loss(other(X), y))
    assert math.isfinite(again.last_step["sigma"]) and again.last_step["sigma"] > 0


# --------------------------------------------------------------------------- the ratio test
def _bent(beta: float, at: list[float]):
    """f(p) = -p + p^2/2 + beta p^4 from p = 0, recording the point of every evaluation.

    At 0 the quartic term has no slope and no curvature: the exact model is m(s) = -s + s^2/2,
    whose minimiser s = 1 predicts a decrease of 1/2, while f falls by 1/2 - beta there. So
    rho = 1 - 2 beta, for a finite and positive actual decrease when beta < 1/2; every number
    below is a dyadic fraction, exact in float64.
    """
    p = torch.zeros(1, dtype=F64, requires_grad=True)

    def closure():
        at.append(float(p.detach()[0]))
        return (-p + 0.5 * p**2 + beta * p**4).sum()

    return p, closure


def test_a_finite_small_rho_is_rejected_undone_and_the_radius_shrinks():
    at: list[float] = []
    p, closure = _bent(0.484375, at)  # rho = 1 - 2 beta = 1/32: in (0, eta = 0.1]
    opt = DRSOM([p], hessian="hvp", directions="gradient", lr=10.0, radius=10.0, max_trials=1)
    opt.step(closure)
    info = opt.last_step
    assert 0 < info["actual"] < info["pred"] == 0.5  # a real decrease, a small share of the model's
    assert info["rho"] == pytest.approx(1 / 32, rel=1e-12)
    assert not info["accepted"] and info["trials"] == 1
    assert at == [0.0, 1.0]  # the gradient at 0, the one trial at the Newton point
    assert p.item() == 0.0  # the rejected trial undone exactly
    assert opt._ctrl.value == 0.25  # shrunk to shrink * |step|
    assert info["step_norm"] == 0.0


def test_a_rejected_trial_is_retried_from_the_original_point():
    at: list[float] = []
    p, closure = _bent(0.484375, at)
    opt = DRSOM([p], hessian="hvp", directions="gradient", lr=10.0, radius=10.0, max_trials=3)
    opt.step(closure)
    info = opt.last_step
    # trial 2: radius 0.25 on the boundary, rho = (0.21875 - beta/256) / 0.21875 > eta
    assert at == [0.0, 1.0, 0.25]  # the second trial steps from 0, not from the rejected point
    assert info["accepted"] and info["trials"] == 2 and p.item() == 0.25
    assert info["pred"] == 0.21875 and info["rho"] == pytest.approx(1 - 0.484375 / 56, rel=1e-12)
    assert opt._ctrl.value == 0.5  # rho > zeta2 on the boundary: expanded from 0.25


@pytest.mark.parametrize(("beta", "radius"), [(0.4375, 0.25), (0.0625, 10.0)])
def test_rho_above_eta_is_accepted_and_sets_the_radius(beta, radius):
    at: list[float] = []
    p, closure = _bent(beta, at)  # rho = 1/8 (accepted, but below zeta1) or 7/8
    opt = DRSOM([p], hessian="hvp", directions="gradient", lr=10.0, radius=10.0, max_trials=1)
    opt.step(closure)
    info = opt.last_step
    assert info["rho"] == pytest.approx(1 - 2 * beta, rel=1e-12)
    assert info["accepted"] and at == [0.0, 1.0] and p.item() == 1.0
    # rho < zeta1 shrinks even an accepted step's radius; an interior step never expands it
    assert opt._ctrl.value == radius


def test_rho_equal_to_eta_is_rejected():
    """Accept on rho > eta, strictly: with eta set to the trial's own rho the step is refused,
    with eta one float below it the same step is taken."""
    at: list[float] = []
    p, closure = _bent(0.484375, at)
    probe = DRSOM([p], hessian="hvp", directions="gradient", lr=10.0, max_trials=1)
    probe.step(closure)
    rho = probe.last_step["rho"]
    for eta, accepted in ((rho, False), (math.nextafter(rho, 0.0), True)):
        p, closure = _bent(0.484375, at)
        opt = DRSOM([p], hessian="hvp", directions="gradient", lr=10.0, max_trials=1, eta=eta)
        opt.step(closure)
        assert opt.last_step["rho"] == rho
        assert opt.last_step["accepted"] is accepted and p.item() == (1.0 if accepted else 0.0)
