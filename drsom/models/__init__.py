"""Models from config: ``build_model(node, num_classes, input_shape)``.

A model config is a Hydra ``_target_`` node (:mod:`drsom.cfg.targets`): any class or function that
returns a ``torch.nn.Module``, e.g. the suite's ``drsom.models.resnet18`` or
``torchvision.models.resnet18``. The suite's ResNet, VGG and DenseNet variants are the CIFAR ones
used by the AdaBelief paper's experiments (3x3 stride-1 stem, no max-pool), so results are
comparable with its tables.

What the dataset decides is passed in when the config does not set it: ``num_classes`` (when the
target takes it, by name or through ``**kwargs``) and ``in_channels`` (when it takes it by name).
The model is then checked on one input of the dataset's shape: it must return one logit per class.

Floor 2: may import ``drsom.cfg`` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from drsom.cfg.targets import TargetError, build, check_keywords, keywords

from .cnn import SmallCNN
from .densenet import densenet121
from .resnet import resnet18, resnet34
from .vgg import vgg11

# The suite's own keys of a model config: ``name`` names it in run ids (default: the target's last
# part, lower case), ``display`` in figures and tables (default: the name).
MODEL_META: tuple[str, ...] = ("name", "display")


def check_model(node: Mapping[str, Any]) -> None:
    """What can be checked before the data is read: the target and its keywords."""
    check_keywords("model", node, MODEL_META, nn.Module)


def build_model(node: Mapping[str, Any], num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """A freshly initialised model (its own default init, as in the reference code)."""
    named, open_ended = keywords(check_keywords("model", node, MODEL_META, nn.Module))
    given = node.get("num_classes")
    if given is not None and given != num_classes:
        raise TargetError(
            f"model.num_classes={given!r} but the dataset has {num_classes} classes; leave it "
            "out and the suite passes the dataset's"
        )
    injected: dict[str, Any] = {}
    if "num_classes" in named or open_ended:
        injected["num_classes"] = num_classes
    if "in_channels" in named:
        injected["in_channels"] = int(input_shape[0])
    model = build("model", node, MODEL_META, **injected)
    path = node["_target_"]
    if not isinstance(model, nn.Module):
        raise TargetError(
            f"model._target_={path!r} returned a {type(model).__name__}, not a module"
        )
    _check_output(model, path, num_classes, input_shape)
    return model


def _check_output(model: nn.Module, path: str, num_classes: int, shape: Sequence[int]) -> None:
    # Two examples, in eval mode and without gradients: BatchNorm's running statistics and the
    # global RNG (dropout) are left as they were, so the run's numbers do not depend on the check.
    was_training = model.training
    model.eval()
    state = torch.random.get_rng_state()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as exc:
        raise TargetError(
            f"model ({path}) fails on inputs of the dataset's shape {tuple(shape)}: "
            f"{' '.join(str(exc).split()) or type(exc).__name__}"
        ) from None
    finally:
        torch.random.set_rng_state(state)
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TargetError(
            f"model ({path}) returns {got} for 2 inputs of shape {tuple(shape)}; expected "
            f"(2, {num_classes}): one logit per class"
        )


__all__ = [
    "MODEL_META",
    "SmallCNN",
    "build_model",
    "check_model",
    "densenet121",
    "resnet18",
    "resnet34",
    "vgg11",
]
