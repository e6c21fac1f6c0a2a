"""The optimizer protocol: every optimizer, ours or torch's, reports how to step it and what a step
cost, and the costs it reports are the model evaluations that really happened (counted by hooks).
"""

import math

import pytest
import pytorch_optimizer as po
import torch
import torch.nn.functional as F
from torch import nn

from drsom.optim import (
    build,
    describe,
    hyperparameters,
    make_closure,
    needs_double_backward,
    state_numel,
    step_counts,
    step_diagnostics,
    step_protocol,
    take_step,
)
from drsom.optim.protocol import ORACLES, Description


class Counted:
    """A tiny CNN whose forwards and gradient evaluations (at its first weight) are counted.

    A tensor hook on a leaf fires for every derivative taken with respect to it: the backward of
    a step, ``autograd.grad`` (finite differences) and the second derivative of an HVP alike.
    """

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)
        )
        self.x = torch.randn(8, 1, 6, 6)
        self.y = torch.randint(0, 4, (8,))
        self.forwards = self.derivatives = 0
        self.model.register_forward_hook(lambda *_: self._forward())
        self.model[0].weight.register_hook(lambda g: self._derivative())

    def _forward(self):
        self.forwards += 1

    def _derivative(self):
        self.derivatives += 1

    def closure(self):
        return make_closure(self.model, F.cross_entropy, self.x, self.y)

    def step(self, opt):
        """One step by the protocol; returns (forwards, derivatives) it took."""
        f0, d0 = self.forwards, self.derivatives
        take_step(opt, self.closure())
        return self.forwards - f0, self.derivatives - d0


def _check_counts(net, opt, steps=3):
    for _ in range(steps):
        forwards, derivatives = net.step(opt)
        counts = step_counts(opt)
        assert set(counts) == set(ORACLES)
        assert counts["forward"] == forwards, (counts, forwards)
        assert counts["grad"] + counts["hvp"] == derivatives, (counts, derivatives)


@pytest.mark.parametrize(
    "make", [lambda p: torch.optim.NAdam(p, lr=1e-2), lambda p: torch.optim.SGD(p, lr=0.1)]
)
def test_plain_torch_optimizers_get_first_order_defaults(make):
    net = Counted()
    opt = make(net.model.parameters())  # built directly: no attribute of the protocol
    assert describe(opt) == Description(step_protocol="backward", needs_double_backward=False)
    _check_counts(net, opt)
    assert step_counts(opt) == {"forward": 1, "grad": 1, "hvp": 0}
    assert step_diagnostics(opt) == {}
    floats = sum(t.numel() for s in opt.state.values() for t in s.values() if t.is_floating_point())
    assert state_numel(opt) == floats


@pytest.mark.parametrize("direct", [False, True])
def test_adahessian_reports_its_hutchinson_products(direct):
    net = Counted()
    params = net.model.parameters()
    if direct:  # pytorch_optimizer's class as a user's _target_ would build it
        opt = po.AdaHessian(params, lr=0.1, update_period=2, num_samples=3)
    else:
        opt = build("adahessian", params, update_period=2, num_samples=3)
    assert describe(opt) == Description("create_graph", True)
    hvps = []
    for _ in range(4):
        forwards, derivatives = net.step(opt)
        counts = step_counts(opt)
        assert (counts["forward"], counts["grad"]) == (forwards, 1)
        assert counts["grad"] + counts["hvp"] == derivatives
        hvps.append(counts["hvp"])
    assert hvps == [3, 0, 3, 0]  # refreshed on steps 1 and 3


def test_sophiah_built_directly_is_stepped_with_create_graph():
    net = Counted()
    opt = po.SophiaH(net.model.parameters(), lr=1e-2, update_period=3)
    assert step_protocol(opt) == "create_graph" and needs_double_backward(opt)
    hvps = []
    for _ in range(4):
        forwards, derivatives = net.step(opt)
        hvps.append(step_counts(opt)["hvp"])
        assert 1 + hvps[-1] == derivatives
    assert hvps == [1, 0, 0, 1]


@pytest.mark.parametrize("hessian", ["adam", "hvp", "fd", "interp"])
def test_drsom_counts_are_the_evaluations_it_made(hessian):
    net = Counted()
    opt = build("drsom_seed", net.model.parameters(), hessian=hessian, lr=2.0)
    assert describe(opt) == Description("closure", hessian == "hvp")
    assert step_counts(opt) == dict.fromkeys(ORACLES, 0)  # no step yet
    assert step_diagnostics(opt) == {}
    _check_counts(net, opt, steps=4)
    counts = step_counts(opt)
    assert counts["hvp"] == (2 if hessian == "hvp" else 0)  # k = 2 once momentum is filled
    assert counts["grad"] == (3 if hessian == "fd" else 1)


def test_drsom_diagnostics_are_flat_floats_with_the_same_keys_every_step():
    net = Counted()
    opt = build("drsom_seed", net.model.parameters(), directions="history", history=2, lr=4.0)
    keys = None
    for _ in range(3):
        net.step(opt)
        diag = step_diagnostics(opt)
        assert all(isinstance(v, float) for v in diag.values()), diag
        keys = keys or set(diag)
        assert set(diag) == keys
    info = opt.last_step
    assert {"rho", "radius", "accepted", "trials", "lam", "memory"} <= keys
    assert [diag[f"alpha_{i}"] for i in range(3)] == pytest.approx(
        info["alpha"] + [0.0] * (3 - len(info["alpha"]))
    )
    assert diag["accepted"] == float(info["accepted"]) and diag["trials"] == info["trials"]
    assert diag["radius"] == info["radius"] and diag["memory"] == 2.0


@pytest.mark.parametrize(
    "subproblem, own", [("trust_region", "radius"), ("regularized", "gamma"), ("cubic", "sigma")]
)
def test_drsom_controllers_report_their_own_parameter(subproblem, own):
    net = Counted()
    opt = build("drsom_seed", net.model.parameters(), subproblem=subproblem)
    net.step(opt)
    diag = step_diagnostics(opt)
    assert own in diag and math.isfinite(diag[own]) and diag[own] > 0
    assert opt.last_step[own] == diag[own]


def test_drsom_state_size_is_its_direction_matrix_and_averages():
    net = Counted()
    n = sum(p.numel() for p in net.model.parameters())
    opt = build("drsom_seed", net.model.parameters())  # momentum (2 rows) + Adam's second moment
    net.step(opt)
    assert state_numel(opt) == 3 * n
    # the default: g, P m_hat, d, the direction's m and v, and the curvature's second moment
    opt = build("drsom", net.model.parameters())
    net.step(opt)
    assert state_numel(opt) == 6 * n


def test_hooks_the_protocol_reads_are_checked():
    class Noisy(torch.optim.SGD):
        def step_diagnostics(self):
            return {"gain": 2, "unset": None}

        def step_counts(self):
            return {"forward": 2}

    opt = Noisy([nn.Parameter(torch.zeros(2))], lr=0.1)
    diag = step_diagnostics(opt)
    assert diag["gain"] == 2.0 and math.isnan(diag["unset"])
    assert step_counts(opt) == {"forward": 2, "grad": 0, "hvp": 0}
    opt.step_protocol = "twice"
    with pytest.raises(ValueError, match=r"^Noisy.step_protocol='twice'; accepted values: back"):
        describe(opt)


def test_a_diagnostic_named_like_a_column_of_the_loop_is_refused():
    class Clash(torch.optim.SGD):
        def step_diagnostics(self):
            return {"gain": 1.0, "loss": 0.5}

    opt = Clash([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"^Clash.step_diagnostics\(\) reports 'loss', a name"):
        step_diagnostics(opt)


def test_hyperparameters_are_the_first_group_plus_the_optimizers_own_choices():
    params = [nn.Parameter(torch.zeros(3))]
    nadam = hyperparameters(torch.optim.NAdam(params, lr=2e-3))
    assert nadam["lr"] == 2e-3 and nadam["betas"] == [0.9, 0.999] and "params" not in nadam
    opt = build("drsom_seed", params, hessian="fd", directions="history", subproblem="cubic")
    own = hyperparameters(opt)
    assert (own["hessian"], own["directions"], own["subproblem"]) == ("fd", "history", "cubic")
    assert own["max_trials"] == 5 and own["momentum"] is None


def test_step_protocol_attribute():
    class Closure(torch.optim.SGD):
        step_protocol = "closure"

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert step_protocol(torch.optim.SGD(params, lr=0.1)) == "backward"
    assert step_protocol(Closure(params, lr=0.1)) == "closure"
    bad = torch.optim.SGD(params, lr=0.1)
    bad.step_protocol = "twice"
    with pytest.raises(ValueError, match="step_protocol='twice'"):
        step_protocol(bad)
