"""Optimizers from config: ``optimizer_factory(node)(params)``, and ``build(name, params)``.

An optimizer config is a Hydra ``_target_`` node (:mod:`drsom.cfg.targets`) with ``_partial_:
true``: the suite's own (``configs/optimizer/*.yaml``: DRSOM, ``torch.optim.Adam``,
pytorch_optimizer's AdaBelief, ...) and a user's (``torch.optim.NAdam``) are read the same way. Its
meta keys are :data:`OPTIMIZER_META`; every other key is a keyword argument of the target, checked
against its signature and, for the hyperparameters the suite's optimizers share, against
:data:`RULES`, so a bad value is one line naming the key before any data is read (the libraries
check some of these late, partly or not at all: ``lr=0`` passes, adabound's ``final_lr`` is never
checked). :mod:`drsom.optim.protocol` says how to step the result, what a step costs and what it
reports.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from drsom.cfg import checks
from drsom.cfg.targets import TargetError, arguments, check_keywords, keywords
from drsom.cfg.targets import build as build_target

__all__ = ["OPTIMIZER_META", "RULES", "build", "optimizer_factory"]

# The suite's own keys of an optimizer config, never passed to the optimizer: ``label`` names the
# variant in run ids (default: the target's class name, lower case); ``display``, ``color`` and
# ``marker`` are how figures and tables show it (default: the label, a colour fixed by the
# label, no marker).
OPTIMIZER_META: tuple[str, ...] = ("label", "display", "color", "marker")

Factory = Callable[[Iterable[torch.Tensor] | Iterable[dict]], torch.optim.Optimizer]


# Value rules of the hyperparameters the suite's optimizers share: (accepted values, test).
RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": (checks.POSITIVE, checks.is_positive),
    "final_lr": (checks.POSITIVE, checks.is_positive),
    "eps": (checks.NON_NEGATIVE, checks.is_non_negative),
    "weight_decay": (checks.NON_NEGATIVE, checks.is_non_negative),
    "momentum": (checks.UNIT, checks.in_unit),
    "beta": (checks.UNIT, checks.in_unit),
}

# the config boundary's lines name the key: optimizer.lr must be ...
_LINE = dict(prefix="optimizer.", error=TargetError)


def _check_values(target: Callable, kwargs: Mapping[str, Any]) -> None:
    defaults, _ = keywords(target)
    for key, value in kwargs.items():
        default = defaults.get(key)
        if key in RULES:
            accepted, ok = RULES[key]
            checks.real(key, value, accepted, ok, **_LINE)
        elif key == "betas":
            checks.unit_pair(key, value, "a pair of numbers in [0, 1), e.g. [0.9, 0.999]", **_LINE)
        elif isinstance(default, bool):
            checks.boolean(key, value, **_LINE)
        elif isinstance(default, int) and value is not None:
            if not checks.is_integer(value):
                raise checks.refusal(key, value, "an integer", **_LINE)
        elif isinstance(default, float) and value is not None and not checks.is_real(value):
            raise checks.refusal(key, value, "a number", **_LINE)
    _check_library_quirks(target, kwargs)


def _check_library_quirks(target: Callable, kwargs: Mapping[str, Any]) -> None:
    """Settings a library accepts and then ignores: refused, never run as something else."""
    import pytorch_optimizer as po

    decay = kwargs.get("weight_decay", 0.0)
    if target is po.RAdam and kwargs.get("weight_decouple") is False and decay != 0.0:
        # pytorch_optimizer's RAdam only implements decoupled decay; False would drop it silently.
        raise TargetError(
            "optimizer.weight_decouple=false is not supported by pytorch_optimizer.RAdam (its "
            "weight decay would be ignored); accepted values: true"
        )


def optimizer_factory(node: Mapping[str, Any]) -> Factory:
    """Check ``node`` now (target, keywords, values); return ``factory(params) -> optimizer``."""
    target = check_keywords("optimizer", node, OPTIMIZER_META, torch.optim.Optimizer)
    path = node["_target_"]
    if node.get("_partial_") is not True:
        raise TargetError(
            "optimizer._partial_ must be true: the optimizer is built later, over the model's "
            "parameters"
        )
    _check_values(target, arguments(node, OPTIMIZER_META))

    def factory(params, **runtime):
        opt = build_target("optimizer", node, OPTIMIZER_META, params, runtime=runtime)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TargetError(
                f"optimizer._target_={path!r} returned a {type(opt).__name__}, "
                "not a torch.optim.Optimizer"
            )
        return opt

    # DRSOM's data-parallel hook (drsom.optim.distributed): an optimizer that takes ``reduce``
    # averages what its decisions read itself, and is given the reducer of a multi-process run
    factory.reduces = "reduce" in keywords(target)[0]
    return factory


@functools.cache
def _packaged(name: str) -> dict[str, Any]:
    from drsom.cfg.compose import CONFIG_DIR, suite_config

    names = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))
    if name not in names:
        raise TargetError(f"unknown optimizer config {name!r}; accepted values: {', '.join(names)}")
    return suite_config([f"optimizer={name}"])["optimizer"]


def build(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict], **overrides: Any
) -> torch.optim.Optimizer:
    """The suite's optimizer config ``name`` (``configs/optimizer/<name>.yaml``) over ``params``.

    ``overrides`` replace the config's keyword arguments, e.g. ``build("adam", params, lr=3e-4)``.
    Raises ``TargetError`` (a ``ValueError``) for a bad value, in one line.
    """
    node = {**copy.deepcopy(_packaged(name)), **overrides}
    return optimizer_factory(node)(params)
