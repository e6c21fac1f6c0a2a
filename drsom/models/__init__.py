"""Models for 32x32x3 inputs: ``build_model(name, num_classes)``.

The ResNet, VGG and DenseNet variants are the CIFAR ones used by the AdaBelief paper's experiments
(3x3 stride-1 stem, no max-pool), so results are comparable with its tables.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cnn import SmallCNN
from .densenet import densenet121
from .resnet import resnet18, resnet34
from .vgg import vgg11

_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "cnn": lambda num_classes: SmallCNN(num_classes),
    "resnet18": resnet18,
    "resnet34": resnet34,
    "vgg11": vgg11,
    "densenet121": densenet121,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Return a freshly initialised model (PyTorch's default init, as in the reference code).

    Raises ValueError for an unknown name or a non-positive ``num_classes``.
    """
    key = str(name).strip().lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}: model must be one of {', '.join(MODEL_NAMES)}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return _BUILDERS[key](int(num_classes))


__all__ = ["MODEL_NAMES", "build_model"]
