"""The model zoo: shapes, CIFAR parameter counts, channels_last, and the ``_target_`` contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from drsom.cfg.compose import CONFIG_DIR, suite_config
from drsom.cfg.targets import TargetError
from drsom.models import build_model

MODEL_NAMES = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"

# Parameter counts of the published CIFAR models with a 10-way classifier; a model without a
# published count is not checked here.
KNOWN_PARAMS = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "vgg11": 9_231_114,
    "densenet121": 6_956_298,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config(name: str) -> dict:
    return suite_config([f"model={name}"])["model"]


def suite_model(name: str, num_classes: int = 10, shape=(3, 32, 32)) -> nn.Module:
    """The suite's model config ``name``, built as a run builds it."""
    return build_model(config(name), num_classes, shape)


def documented_models() -> set[str]:
    """The names in the ``model/`` entry of docs/usage.md's list of config groups."""
    entry = re.search(r"^- `model/`:(.*?)(?=^- `|^$)", USAGE.read_text(), re.M | re.S)
    assert entry, f"{USAGE}: no `model/` entry in the list of config groups"
    return set(re.findall(r"`([^`]+)`", entry.group(1)))


def test_every_model_config_is_documented():
    # each config also builds: test_output_shape_and_channels_last runs every one
    undocumented = sorted(set(MODEL_NAMES) - documented_models())
    assert MODEL_NAMES and not undocumented, f"add to docs/usage.md's model/ entry: {undocumented}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_channels_last(name):
    torch.manual_seed(0)
    model = suite_model(name, num_classes=7).eval()
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
    count = n_params(suite_model(name))
    assert abs(count - KNOWN_PARAMS[name]) / KNOWN_PARAMS[name] < 0.005, count


def test_vgg11_has_a_single_512_to_classes_classifier():
    model = suite_model("vgg11")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 10)]
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "densenet121"])
def test_cifar_stem_is_3x3_stride_1_without_max_pool(name):
    model = suite_model(name)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert first_conv.in_channels == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_cnn_is_small_with_batchnorm_and_one_dropout():
    model = suite_model("cnn")
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
    model = suite_model("cnn").train()
    loss = model(torch.randn(1, 3, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_dataset_decides_classes_and_channels_and_configs_set_width():
    assert suite_model("resnet18", num_classes=100).fc.out_features == 100
    gray = suite_model("cnn", shape=(1, 28, 28))  # in_channels from the data; pooled to 4x4
    assert gray.features[0][0].in_channels == 1
    with torch.no_grad():
        assert gray.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    narrow = build_model({**config("resnet18"), "width": 16}, 10, (3, 32, 32))
    assert n_params(narrow) < n_params(suite_model("resnet18")) / 10


def test_any_importable_model_builds_with_the_datasets_classes():
    tv = build_model({"_target_": "torchvision.models.resnet18", "name": "tv"}, 10, (3, 32, 32))
    assert tv.fc.out_features == 10  # num_classes reaches it through **kwargs


BAD_MODELS = [
    (
        {"_target_": "torchvision.models.resnet50x"},
        "model._target_='torchvision.models.resnet50x' cannot be imported",
    ),
    (
        {"_target_": "torch.optim.Adam"},
        "model._target_='torch.optim.Adam' is not a torch.nn.Module",
    ),
    (
        {"_target_": "drsom.models.SmallCNN", "depth": 3},
        "model.depth is not an argument of drsom.models.SmallCNN",
    ),
    (
        {"_target_": "drsom.models.SmallCNN", "num_classes": 5},
        "model.num_classes=5 but the dataset has 10 classes",
    ),
    (
        {"_target_": "torchvision.models.resnet18", "depth": 3},
        "model (torchvision.models.resnet18)"
        ": ResNet.__init__() got an unexpected keyword argument 'depth'",
    ),
    (
        {"_target_": "torch.nn.Identity"},
        "model (torch.nn.Identity) returns (2, 3, 32, 32) for 2 "
        "inputs of shape (3, 32, 32); expected (2, 10)",
    ),
    (
        {"_target_": "torch.nn.Linear", "in_features": 5, "out_features": 10},
        "model (torch.nn.Linear) fails on inputs of the dataset's shape (3, 32, 32)",
    ),
    ({"_target_": "builtins.dict"}, "model._target_='builtins.dict' is not a torch.nn.Module"),
]


@pytest.mark.parametrize(
    ("node", "message"), BAD_MODELS, ids=[m[0]["_target_"] for m in BAD_MODELS]
)
def test_a_model_config_that_cannot_work_is_one_line_naming_it(node, message):
    with pytest.raises(TargetError) as info:
        build_model(node, 10, (3, 32, 32))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_shape_check_leaves_the_models_state_and_the_rng_alone():
    # A run's numbers must not depend on the check: same weights, same generator state after it,
    # BatchNorm statistics untouched, training mode kept.
    torch.manual_seed(0)
    model = suite_model("cnn")
    after_build = torch.random.get_rng_state()
    torch.manual_seed(0)
    twin = type(model)()
    assert torch.equal(after_build, torch.random.get_rng_state())
    for (key, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert model.training
