"""torch.optim habits with DRSOM: each works as a torch user expects or fails at once, in one line.

Param groups added later are trained; a model cast or frozen after building is re-packed; an
LBFGS-style closure, 16-bit parameters and torch.compile with exact Hessian products are refused
with a ``DRSOM:`` line saying what to do; OneCycleLR runs; bad arguments name themselves.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from drsom.optim import DRSOM, build


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X1, X2 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    y = X1 @ torch.randn(4, 1, generator=g) + X2 @ torch.randn(4, 1, generator=g)
    return X1, X2, y


def _flat_of(opt, p) -> bool:
    return p.untyped_storage().data_ptr() == opt._flat.untyped_storage().data_ptr()


# --------------------------------------------------------------------------- add_param_group
def test_a_param_group_added_later_is_trained_and_keeps_the_old_state():
    X1, X2, y = _data()
    a, b = nn.Linear(4, 1), nn.Linear(4, 1)

    def closure():
        return (a(X1) + b(X2) - y).pow(2).mean()

    for p in b.parameters():
        p.requires_grad_(False)
    opt = DRSOM(a.parameters(), hessian="hvp", lr=10.0)
    for _ in range(3):
        opt.step(closure)
    a_only = closure().item()  # what a alone can reach: y depends on X2 through b
    memory = opt._R[1].clone()  # a's momentum direction
    for p in b.parameters():
        p.requires_grad_(True)
    b0 = [p.detach().clone() for p in b.parameters()]
    opt.add_param_group({"params": b.parameters(), "weight_decay": 0.0})
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"]  # inherits the step bound
    assert all(_flat_of(opt, p) for p in [*a.parameters(), *b.parameters()])
    torch.testing.assert_close(opt._R[1, : memory.numel()], memory, rtol=0, atol=0)
    assert opt._R[1, memory.numel() :].eq(0).all()  # new parameters: no memory yet
    for _ in range(10):
        opt.step(closure)
    assert all(not torch.equal(p.detach(), q) for p, q in zip(b.parameters(), b0, strict=True))
    assert closure().item() < 0.05 * a_only


def test_a_param_group_that_cannot_share_the_step_is_refused_and_not_added():
    opt = DRSOM(nn.Linear(4, 1).parameters(), lr=1.0)
    with pytest.raises(ValueError, match=r"^DRSOM: all param groups must share lr") as info:
        opt.add_param_group({"params": nn.Linear(4, 1).parameters(), "lr": 0.1})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^DRSOM: all trainable parameters must share one dtype"):
        opt.add_param_group({"params": nn.Linear(4, 1).double().parameters()})
    assert len(opt.param_groups) == 1
    # a scheduler (or a user) that sets the groups apart is caught at the next step
    opt.add_param_group({"params": nn.Linear(4, 1).parameters()})
    opt.param_groups[1]["lr"] = 0.5
    with pytest.raises(ValueError, match=r"^DRSOM: all param groups must share lr"):
        opt.step(lambda: sum(p.sum() for g in opt.param_groups for p in g["params"]))


# --------------------------------------------------------------------------- closure protocol
@pytest.mark.parametrize("hessian", ["adam", "hvp"])  # the backward path and the graph path
def test_an_lbfgs_style_closure_is_refused_at_once_with_the_protocol(hessian):
    X1, _, y = _data()
    model = nn.Linear(4, 1)
    opt = DRSOM(model.parameters(), hessian=hessian)
    before = [p.detach().clone() for p in model.parameters()]

    def lbfgs_closure():
        opt.zero_grad()
        loss = (model(X1) - y).pow(2).mean()
        loss.backward()
        return loss

    with pytest.raises(ValueError) as info:
        opt.step(lbfgs_closure)
    text = str(info.value)
    assert text.startswith(
        "DRSOM: closure must not call backward(); DRSOM differentiates it itself"
    )
    assert "returns the mini-batch loss as a scalar tensor" in text and "\n" not in text
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before, strict=True))
    # the optimizer is still usable with a closure that follows the protocol
    start = (model(X1) - y).pow(2).mean().item()
    for _ in range(3):
        opt.step(lambda: (model(X1) - y).pow(2).mean())
    assert (model(X1) - y).pow(2).mean().item() < start


# --------------------------------------------------------------------------- cast, freeze
def test_model_double_after_building_is_repacked_with_its_state():
    X1, _, y = _data()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = DRSOM(model.parameters(), hessian="adam")
    for _ in range(2):
        opt.step(lambda: (model(X1) - y).pow(2).mean())
    memory, avg = opt._R[1].clone(), opt._curv.buffers["exp_avg_sq"].clone()
    model.double()
    X1, y = X1.double(), y.double()
    start = (model(X1) - y).pow(2).mean().item()
    opt.step(lambda: (model(X1) - y).pow(2).mean())
    assert opt._flat.dtype == opt._R.dtype == torch.float64
    assert all(p.dtype == torch.float64 and _flat_of(opt, p) for p in model.parameters())
    # the moving average went on from the carried one (a reset would give g^2 exactly)
    g2 = opt._R[0].pow(2)
    torch.testing.assert_close(
        opt._curv.buffers["exp_avg_sq"], 0.999 * avg.double() + 0.001 * g2, rtol=1e-6, atol=0
    )
    assert opt.last_step["k"] == 2 and memory.abs().max() > 0  # momentum was carried
    assert opt.last_step["accepted"] and (model(X1) - y).pow(2).mean().item() < start


def test_16_bit_parameters_are_refused_with_what_to_do_instead():
    model = nn.Linear(4, 1)
    with pytest.raises(
        ValueError, match=r"^DRSOM: parameters must be float32 or float64.*autocast"
    ):
        DRSOM(nn.Linear(4, 1).half().parameters())
    opt = DRSOM(model.parameters())
    model.half()
    X = torch.randn(8, 4).half()
    with pytest.raises(ValueError, match=r"^DRSOM: parameters must be float32 or float64, got"):
        opt.step(lambda: model(X).float().pow(2).mean())


def test_freezing_after_building_is_honoured_and_unfreezing_trains_again():
    X1, _, y = _data()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = DRSOM(model.parameters(), hessian="adam", weight_decay=0.1)

    def closure():
        return (model(X1) - y).pow(2).mean()

    opt.step(closure)
    head = opt._curv.buffers["exp_avg_sq"][-9:].clone()  # the last layer's average
    model[0].requires_grad_(False)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    last = [p.detach().clone() for p in model[2].parameters()]
    for _ in range(3):
        opt.step(closure)
    # weight decay would move the frozen layer if it were still trained
    assert all(
        torch.equal(p.detach(), q) for p, q in zip(model[0].parameters(), frozen, strict=True)
    )
    assert all(not _flat_of(opt, p) and p.grad is None for p in model[0].parameters())
    assert not any(
        torch.equal(p.detach(), q) for p, q in zip(model[2].parameters(), last, strict=True)
    )
    assert opt._flat.numel() == 9
    assert not torch.equal(opt._curv.buffers["exp_avg_sq"], head)  # went on from head
    model[0].requires_grad_(True)
    opt.step(closure)
    assert not any(
        torch.equal(p.detach(), q) for p, q in zip(model[0].parameters(), frozen, strict=True)
    )


# --------------------------------------------------------------------------- torch.compile
def test_compiled_model_with_exact_hvps_fails_at_once_and_fd_works():
    X1, _, y = _data()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    compiled = torch.compile(model, backend="aot_eager")  # AOTAutograd, as inductor, no C++ build
    before = [p.detach().clone() for p in model.parameters()]
    opt = DRSOM(model.parameters(), hessian="hvp")
    with pytest.raises(ValueError, match=r"^DRSOM: hessian='hvp' .*torch.compile.*hessian='fd'"):
        opt.step(lambda: (compiled(X1) - y).pow(2).mean())
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before, strict=True))
    opt = DRSOM(model.parameters(), hessian="fd")
    start = (model(X1) - y).pow(2).mean().item()
    for _ in range(3):
        opt.step(lambda: (compiled(X1) - y).pow(2).mean())
    assert opt.counts["accepted"] >= 2 and (model(X1) - y).pow(2).mean().item() < start


def test_inductors_donated_buffer_refusal_reads_as_the_same_line():
    # inductor refuses create_graph=True in the backward of a graph with donated buffers (the
    # error a default torch.compile gives); this stands in for it without a C++ build
    class Donated(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError(
                "This backward function was compiled with non-empty donated buffers which "
                "requires create_graph=False and retain_graph=False."
            )

    p = torch.ones(3, requires_grad=True)
    opt = DRSOM([p], hessian="hvp")
    with pytest.raises(ValueError, match=r"^DRSOM: hessian='hvp'"):
        opt.step(lambda: Donated.apply(p).pow(2).sum())
    # any other RuntimeError is left alone
    opt = DRSOM([p], hessian="hvp")
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(lambda: (_ for _ in ()).throw(RuntimeError("boom")))


# --------------------------------------------------------------------------- schedulers
def test_one_cycle_lr_with_its_defaults_schedules_the_step_bound():
    X1, _, y = _data()
    model = nn.Linear(4, 1)
    opt = DRSOM(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=10)
    lrs, steps = [], []
    eps = torch.finfo(torch.float32).eps
    with pytest.warns(UserWarning, match=r"^DRSOM: ignoring the param groups' 'momentum'") as seen:
        for _ in range(10):
            lr = opt.param_groups[0]["lr"]
            before = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
            opt.step(lambda: (model(X1) - y).pow(2).mean())
            after = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
            lrs.append(lr)
            steps.append((after - before).norm().item())
            assert steps[-1] <= lr * (1 + 4 * eps) + 2 * eps * before.norm().item()
            sched.step()
    assert len([w for w in seen if "DRSOM" in str(w.message)]) == 1  # once, not every step
    assert lrs[0] == pytest.approx(0.5 / 25) and max(lrs) == pytest.approx(0.5)
    assert lrs[-1] == pytest.approx(0.5 / 25 / 1e4)  # annealed to its floor
    assert steps[-1] < 1e-4  # the bound reached the step
    # without cycle_momentum there is nothing to ignore: no warning
    opt = DRSOM(model.parameters(), lr=1.0)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=4, cycle_momentum=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(lambda: (model(X1) - y).pow(2).mean())


# --------------------------------------------------------------------------- bad arguments
BAD = [
    ("drsom", dict(max_trials=True), "max_trials"),
    ("drsom", dict(history=True), "history"),
    ("drsom", dict(radius=True), "radius"),
    ("drsom", dict(expand=float("inf")), "expand"),
    ("drsom", dict(rank_tol=-1), "rank_tol"),
    ("drsom", dict(gamma=1e-6, gamma_min=1e-3), "gamma_min"),
    ("drsom", dict(directions="random", seed="abc"), "seed"),
    ("drsom", dict(seed=2**64), "seed"),
    ("drsom", dict(betas=0.9), "betas"),
    ("drsom", dict(eta="abc"), "eta"),
    ("drsom_official", dict(max_trials=2.5), "max_trials"),
    ("adabelief", dict(lr=0), "lr"),
    ("adahessian", dict(lr=-1), "lr"),
    ("sophiah", dict(lr=-1), "lr"),
    ("fromage", dict(lr=-1), "lr"),
    ("adabound", dict(final_lr=-1), "final_lr"),
    ("adam", dict(betas=0.9), "betas"),
    ("sgd", dict(lr="abc"), "lr"),
    ("sgd", dict(nesterov="yes"), "nesterov"),
    ("msvag", dict(beta=1.0), "beta"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "key"), BAD, ids=[f"{n}-{k}-{i}" for i, (n, _, k) in enumerate(BAD)]
)
def test_bad_arguments_are_one_line_naming_the_key_and_what_it_accepts(name, kwargs, key):
    with pytest.raises(ValueError) as info:
        build(name, [torch.zeros(2, requires_grad=True)], **kwargs)
    text = str(info.value)
    # the shared rules name the config key; DRSOM's own checks come through with its prefix
    ours = text.startswith(f"optimizer.{key} must be")
    drsom = text.startswith("optimizer (drsom.optim.") and f"DRSOM: {key}" in text
    assert ours or drsom, text
    assert "must be" in text and "\n" not in text


def test_library_checks_beyond_ours_are_one_value_error_line():
    # pytorch_optimizer checks hessian_power itself; its message comes through as one line
    with pytest.raises(
        ValueError, match=r"^optimizer \(pytorch_optimizer.AdaHessian\): Hessian Po"
    ):
        build("adahessian", [torch.zeros(2, requires_grad=True)], hessian_power=2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_moved_to_cuda_after_building_keeps_training_with_a_cuda_generator():
    X1, _, y = _data()
    model = nn.Linear(4, 1)
    opt = DRSOM(model.parameters(), directions="random", seed=3)
    opt.step(lambda: (model(X1) - y).pow(2).mean())
    model.cuda()
    X1, y = X1.cuda(), y.cuda()
    start = (model(X1) - y).pow(2).mean().item()
    for _ in range(3):
        opt.step(lambda: (model(X1) - y).pow(2).mean())
    assert opt._flat.is_cuda and opt._generator.device.type == "cuda"
    assert all(_flat_of(opt, p) for p in model.parameters())
    assert (model(X1) - y).pow(2).mean().item() < start
