"""The optimizer factory: configs and import targets to optimizers, one-line errors on bad input."""

from __future__ import annotations

import pytest
import torch

from drsom.optim import build, optimizer_factory, step_protocol


def test_unknown_config_name_is_rejected():
    with pytest.raises(
        ValueError, match=r"config 'adabeleif'; accepted values:.*adabelief"
    ) as info:
        build("adabeleif", [torch.nn.Parameter(torch.zeros(2))])
    assert "\n" not in str(info.value) and "drsom" in str(info.value)


def test_unknown_keyword_is_rejected():
    with pytest.raises(
        ValueError,
        match=r"optimizer.momentun is not an argument of torch.optim.SGD"
        ".*accepted keys:.*momentum",
    ) as info:
        build("sgd", [torch.nn.Parameter(torch.zeros(2))], momentun=0.9)
    assert "\n" not in str(info.value)
    # pytorch_optimizer would file this under the param groups without a word.
    with pytest.raises(ValueError, match="optimizer.rectifiy is not an argument"):
        build("adabelief", [torch.nn.Parameter(torch.zeros(2))], rectifiy=True)


def test_any_importable_optimizer_class_builds_from_its_target():
    p = torch.nn.Parameter(torch.ones(3))
    node = {"_target_": "torch.optim.NAdam", "_partial_": True, "lr": 0.01, "betas": [0.9, 0.99]}
    opt = optimizer_factory(node)([p])
    assert type(opt).__name__ == "NAdam" and opt.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError, match="optimizer.momentum_decay must be a number, got 'x'"):
        optimizer_factory({**node, "momentum_decay": "x"})
    with pytest.raises(ValueError, match="optimizer._target_='torch.optim.NAdamm' cannot be"):
        optimizer_factory({**node, "_target_": "torch.optim.NAdamm"})


def test_radam_without_decoupled_decay_is_rejected():
    # pytorch_optimizer's RAdam would silently apply no weight decay at all.
    with pytest.raises(ValueError, match="weight_decouple"):
        build("radam", [torch.nn.Parameter(torch.zeros(2))], weight_decouple=False)
    build("radam", [torch.nn.Parameter(torch.zeros(2))], weight_decouple=False, weight_decay=0.0)


def test_drsom_branch():
    drsom_module = pytest.importorskip("drsom.optim.drsom")
    opt = build("drsom", torch.nn.Linear(3, 1).parameters())
    assert isinstance(opt, drsom_module.DRSOM)
    assert step_protocol(opt) == "closure"
