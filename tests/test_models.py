"""The model zoo: shapes, the CIFAR parameter counts, channels_last, and the name contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drsom.models import MODEL_NAMES, build_model

# Parameter counts of the reference CIFAR models with a 10-way classifier.
KNOWN_PARAMS = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "vgg11": 9_231_114,
    "densenet121": 6_956_298,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names_are_the_documented_ones():
    assert set(MODEL_NAMES) == {"cnn", "resnet18", "resnet34", "vgg11", "densenet121"}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_channels_last(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_parameter_counts_match_the_cifar_models(name):
    count = n_params(build_model(name))
    assert abs(count - KNOWN_PARAMS[name]) / KNOWN_PARAMS[name] < 0.005, count


def test_vgg11_has_a_single_512_to_classes_classifier():
    model = build_model("vgg11", num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "densenet121"])
def test_cifar_stem_is_3x3_stride_1_without_max_pool(name):
    model = build_model(name)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert first_conv.in_channels == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_cnn_is_small_with_batchnorm_and_one_dropout():
    model = build_model("cnn")
    assert n_params(model) < 1_000_000
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 1
    # dropout is live in training mode and off in eval mode
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.equal(a, model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_cnn_trains_a_step_with_a_batch_of_one():
    # The loader keeps a last partial batch, which may hold a single example.
    model = build_model("cnn").train()
    loss = model(torch.randn(1, 3, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_num_classes_sets_the_classifier_width():
    assert build_model("resnet18", num_classes=100).fc.out_features == 100


@pytest.mark.parametrize("bad", ["resnet50", "", "vgg"])
def test_unknown_name_is_a_value_error_naming_model_and_choices(bad):
    with pytest.raises(ValueError) as info:
        build_model(bad)
    msg = str(info.value)
    assert "model" in msg
    for name in MODEL_NAMES:
        assert name in msg


def test_invalid_num_classes_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", num_classes=0)
