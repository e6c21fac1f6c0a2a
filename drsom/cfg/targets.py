"""Config nodes that name what they build by import path: ``_target_`` plus keyword arguments.

The optimizer, model and data groups are Hydra ``_target_`` nodes (``hydra.utils.instantiate``
builds them), so a user's own class or function is an ordinary config, kept anywhere on
``hydra.searchpath``::

    _target_: torch.optim.NAdam   # any importable class or function
    _partial_: true               # optimizers only: built later, over the model's parameters
    label: nadam                  # the suite's own keys ("meta keys"), never passed on
    lr: 2.0e-3                    # everything else is a keyword argument of the target

This module is the one place that reads such a node: it finds the target, separates the suite's
keys from the arguments, checks the arguments against the target's signature and builds it. Each
problem is one line naming the config key, the import path and what was wrong (``TargetError``),
raised before anything is trained.

Which keywords a target takes: for a class, the named arguments of ``__init__`` along its MRO (a
mixin's ``weight_decay`` included; ``**kwargs`` is ignored, because library optimizers store
unknown keys silently); for a function, its named arguments, and any keyword when it has
``**kwargs`` (``torchvision.models.resnet18`` passes them to its class, which then decides).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

TARGET, PARTIAL = "_target_", "_partial_"

# Arguments never taken from a config: what the suite passes positionally.
_POSITIONAL = {"self", "params", "defaults"}


class TargetError(ValueError):
    """A ``_target_`` node that cannot be built as configured; the message is one line."""


def target_path(section: str, node: Mapping[str, Any]) -> str:
    path = node.get(TARGET)
    if not isinstance(path, str) or not path.strip():
        raise TargetError(
            f"{section}._target_ is missing: name what {section} builds by import path, e.g. "
            f"{_EXAMPLES.get(section, 'package.module.Name')}"
        )
    return path


_EXAMPLES = {
    "optimizer": "torch.optim.NAdam",
    "model": "torchvision.models.resnet18",
    "data": "drsom.data.digits.digits",
}


def locate(section: str, node: Mapping[str, Any]) -> Callable[..., Any]:
    """The class or function ``node["_target_"]`` names (imported now)."""
    path = target_path(section, node)
    # Hydra's own resolver of ``_target_`` (what instantiate uses), without get_object's logging
    from hydra._internal.utils import _locate

    try:
        found = _locate(path)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raised
        cause = exc.__cause__ or exc
        text = " ".join(str(cause).split()) or type(cause).__name__
        raise TargetError(f"{section}._target_={path!r} cannot be imported: {text}") from None
    if not callable(found):
        raise TargetError(f"{section}._target_={path!r} is a {type(found).__name__}, not callable")
    return found


def keywords(target: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """(named keyword arguments with their defaults, whether any other keyword is accepted)."""
    found: dict[str, Any] = {}
    if inspect.isclass(target):
        for klass in target.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in _parameters(init):
                found.setdefault(p.name, p.default)
        return found, False
    signature = inspect.signature(target)
    for p in _parameters(target):
        found[p.name] = p.default
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return found, open_ended


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in parameters if p.kind in kinds and p.name not in _POSITIONAL]


def arguments(node: Mapping[str, Any], meta: tuple[str, ...]) -> dict[str, Any]:
    """Keyword arguments of ``node``: everything but ``_target_``, ``_partial_`` and ``meta``."""
    return {k: v for k, v in node.items() if k not in (TARGET, PARTIAL, *meta)}


def check_keywords(
    section: str, node: Mapping[str, Any], meta: tuple[str, ...], kind: type | None = None
) -> Callable:
    """Locate the target and refuse keywords it does not take (and, for a class, one that is not
    a subclass of ``kind``); returns the target."""
    target = locate(section, node)
    if kind is not None and inspect.isclass(target) and not issubclass(target, kind):
        raise TargetError(f"{section}._target_={node[TARGET]!r} is not a {_public(kind)} class")
    named, open_ended = keywords(target)
    if open_ended:
        return target
    unknown = sorted(set(arguments(node, meta)) - set(named))
    if unknown:
        accepted = ", ".join([*sorted(named), *meta]) or "none"
        raise TargetError(
            f"{section}.{unknown[0]} is not an argument of {node[TARGET]} (nor a key of the "
            f"suite's {section} config); accepted keys: {accepted}"
        )
    return target


def build(
    section: str,
    node: Mapping[str, Any],
    meta: tuple[str, ...],
    *args: Any,
    passthrough: tuple[type[BaseException], ...] = (),
    runtime: Mapping[str, Any] | None = None,
    **injected: Any,
) -> Any:
    """``hydra.utils.instantiate`` of ``node`` without its meta keys, called with ``args``.

    ``injected`` keywords are what the suite knows only now (the dataset's number of classes);
    the node's own values win. ``args`` come first in the call (optimizers: the parameters).
    ``runtime`` keywords are objects no config can hold (a data-parallel run's reducer), passed
    as they are.
    Whatever the target raises comes back as one ``TargetError`` line naming it, except the
    exceptions in ``passthrough`` (e.g. a dataset that cannot be had), raised as they are.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = check_keywords(section, node, meta)
    named, _ = keywords(target)
    spec = {TARGET: node[TARGET], **injected, **arguments(node, meta)}
    try:
        # Always as a partial first: then a YAML list where the target's default is a tuple
        # (``betas``) is handed over as a tuple, which some libraries insist on.
        made = instantiate({**spec, PARTIAL: True}, _convert_="all")
        given = {
            k: tuple(v) if isinstance(v, list) and isinstance(named.get(k), tuple) else v
            for k, v in made.keywords.items()
        }
        return made.func(*made.args, *args, **given, **(runtime or {}))
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, passthrough):
            raise cause from None
        raise TargetError(f"{section} ({node[TARGET]}): {one_line(cause)}") from None
    except passthrough:
        raise
    except Exception as exc:  # whatever the target raises: the user sees one line naming it
        raise TargetError(f"{section} ({node[TARGET]}): {one_line(exc)}") from None


def _public(kind: type) -> str:
    """``torch.optim.Optimizer``, ``torch.nn.Module``: a class by the name users import it as."""
    parts = kind.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = ".".join(parts[:i])
        if getattr(__import__(module, fromlist=["_"]), kind.__name__, None) is kind:
            return f"{module}.{kind.__name__}"
    return f"{kind.__module__}.{kind.__name__}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def short_name(node: Mapping[str, Any]) -> str:
    """The target's last dotted part, lower case (``torch.optim.NAdam`` -> ``nadam``)."""
    return str(node.get(TARGET, "")).rsplit(".", 1)[-1].lower()
