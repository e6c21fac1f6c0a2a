"""Baseline optimizers: the AdaBelief paper's CIFAR table plus two second-order methods.

``build_baseline(name, params, **cfg)`` returns a configured ``torch.optim.Optimizer``. Defaults
are the hyperparameters of the AdaBelief paper's CIFAR runs (Zhuang et al. 2020; the official
``PyTorch_Experiments/classification_cifar10/main.py``) and, where it gives none, the library's;
``cfg`` overrides them. Each optimizer carries ``step_protocol`` (see :mod:`drsom.optim.protocol`),
telling the training loop how to step it:

* ``"backward"``: ``loss.backward(); opt.step()``.
* ``"create_graph"``: ``loss.backward(create_graph=True); opt.step()`` (Hutchinson Hessians).

==========  ============================  ================================================
name        implementation                defaults (weight decay mode)
==========  ============================  ================================================
sgd         torch.optim.SGD               lr 0.1, momentum 0.9, wd 5e-4 (L2)
adam        torch.optim.Adam              lr 1e-3, eps 1e-8, wd 5e-4 (L2)
adamw       torch.optim.AdamW             lr 1e-3, eps 1e-8, wd 1e-2 (decoupled)
adabelief   pytorch_optimizer.AdaBelief   lr 1e-3, eps 1e-8 (inside s), wd 5e-4 (L2),
                                          no rectification, no AMS bound
radam       pytorch_optimizer.RAdam       lr 1e-3, eps 1e-8, wd 5e-4 (decoupled, scaled
                                          by lr), SGD steps while n_sma < 5
yogi        pytorch_optimizer.Yogi        lr 1e-3, eps 1e-3, wd 5e-4 (L2)
adabound    pytorch_optimizer.AdaBound    lr 1e-3, final_lr 0.1, gamma 1e-3, wd 5e-4 (L2)
msvag       pytorch_optimizer.MSVAG + L2  lr 0.1, beta 0.9, wd 5e-4 (L2)
fromage     pytorch_optimizer.Fromage+L2  lr 1e-2, wd 0
adahessian  pytorch_optimizer.AdaHessian  the authors' CIFAR values (lr 0.15, eps 1e-4, wd 5e-4)
sophiah     pytorch_optimizer.SophiaH     library defaults (lr 6e-2, wd 0)
==========  ============================  ================================================
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_optimizer as po
import torch

from drsom.optim.protocol import STEP_BACKWARD, STEP_CREATE_GRAPH


class _CoupledL2:
    """Mixin that adds L2 weight decay, ``g <- g + weight_decay * theta``, before the wrapped step.

    For library optimizers without a weight-decay option (MSVAG, Fromage); the AdaBelief
    paper's MSVAG took its weight decay this way.
    """

    def __init__(self, params: Any, *args: Any, weight_decay: float = 0.0, **kwargs: Any) -> None:
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, *args, **kwargs)
        # Stored in defaults too so that groups added later get it.
        self.defaults["weight_decay"] = weight_decay
        for group in self.param_groups:
            group.setdefault("weight_decay", weight_decay)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            # The closure must run before the decay is added, or it would overwrite the gradients.
            with torch.enable_grad():
                loss = closure()
        # The library negates the gradient to maximize; the penalty must still pull towards zero.
        sign = -1.0 if getattr(self, "maximize", False) else 1.0
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["weight_decay"] != 0.0 and params:
                grads = [p.grad for p in params]
                torch._foreach_add_(grads, params, alpha=sign * group["weight_decay"])
        super().step()
        return loss


class MSVAG(_CoupledL2, po.MSVAG):
    """M-SVAG (Balles & Hennig, 2018) from pytorch_optimizer, with L2 weight decay.

    With g = grad + weight_decay * theta and one beta for both moving averages::

        m = beta m + (1 - beta) g,   v = beta v + (1 - beta) g^2
        m_hat = m / (1 - beta^t),    v_hat = v / (1 - beta^t)
        rho = (1 - beta) (1 + beta^t) / ((1 + beta) (1 - beta^t))
        s = (v_hat - m_hat^2) / (1 - rho)
        theta -= lr * m_hat^2 / (m_hat^2 + rho s) * m_hat

    The library caps rho at 0.9999 and clips the factor to [0, 1]; so at t = 1 (rho = 1, s = 0/0)
    it takes the step lr * g, where the AdaBelief paper's copy took none.
    """


class Fromage(_CoupledL2, po.Fromage):
    """Fromage (Bernstein et al., 2020) from pytorch_optimizer, with optional L2 weight decay."""


@dataclass(frozen=True)
class _Spec:
    cls: type[torch.optim.Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    step_protocol: str = STEP_BACKWARD


_ADAPTIVE = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4}

_SPECS: dict[str, _Spec] = {
    "sgd": _Spec(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}),
    "adam": _Spec(torch.optim.Adam, _ADAPTIVE),
    "adamw": _Spec(torch.optim.AdamW, {**_ADAPTIVE, "weight_decay": 1e-2}),
    # The seed's Algorithm 2: eps inside s (the library's only form), bias correction, no
    # rectification, L2 decay added to the gradient as in the paper's CIFAR code (the library
    # defaults to decoupled).
    "adabelief": _Spec(
        po.AdaBelief,
        {
            **_ADAPTIVE,
            "weight_decouple": False,
            "fixed_decay": False,
            "rectify": False,
            "ams_bound": False,
        },
    ),
    # The paper used the original RAdam code: decoupled lr-scaled decay and SGD-with-momentum steps
    # while the variance is intractable (degenerated_to_sgd, off by default in the library).
    "radam": _Spec(
        po.RAdam,
        {**_ADAPTIVE, "weight_decouple": True, "fixed_decay": False, "degenerated_to_sgd": True},
    ),
    "yogi": _Spec(
        po.Yogi,
        {**_ADAPTIVE, "eps": 1e-3, "initial_accumulator": 1e-6, "weight_decouple": False},
    ),
    "adabound": _Spec(
        po.AdaBound,
        {
            **_ADAPTIVE,
            "final_lr": 0.1,
            "gamma": 1e-3,
            "weight_decouple": False,
            "ams_bound": False,
        },
    ),
    "msvag": _Spec(MSVAG, {"lr": 0.1, "beta": 0.9, "weight_decay": 5e-4}),
    # The paper ran Fromage with its learning rate only: no weight decay.
    "fromage": _Spec(Fromage, {"lr": 1e-2, "weight_decay": 0.0}),
    # The AdaHessian authors' CIFAR values: the library's eps 1e-16 turns near-zero curvature
    # into huge steps (the loss reached 1e20 within two epochs of a small CNN).
    "adahessian": _Spec(
        po.AdaHessian,
        {"lr": 0.15, "eps": 1e-4, "weight_decay": 5e-4},
        step_protocol=STEP_CREATE_GRAPH,
    ),
    "sophiah": _Spec(po.SophiaH, step_protocol=STEP_CREATE_GRAPH),
}

BASELINE_NAMES: tuple[str, ...] = tuple(_SPECS)

# pytorch_optimizer's own exceptions (NegativeLRError, ...) derive from Exception, not ValueError.
_LIBRARY_ERRORS: tuple[type[Exception], ...] = tuple(
    err
    for err in vars(po.base.exception).values()
    if isinstance(err, type) and issubclass(err, Exception)
)

# Constructor arguments that are not hyperparameters.
_NOT_KEYWORDS = {"self", "params", "defaults"}


def _signature_defaults(name: str) -> dict[str, Any]:
    """The constructor's named arguments and their defaults (``inspect.Parameter.empty``)."""
    spec = _spec(name)
    found: dict[str, Any] = {}
    # The whole MRO, so that the L2 mixin's ``weight_decay`` joins the library class's arguments;
    # ``**kwargs`` is left out because the library would store unknown keys silently.
    for klass in spec.cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _NOT_KEYWORDS:
                found.setdefault(p.name, p.default)
    return found


def accepted_keys(name: str) -> frozenset[str]:
    """Keywords ``build_baseline(name, ...)`` accepts: the constructor's named arguments."""
    return frozenset(_signature_defaults(name))


def _is_real(value: Any) -> bool:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = value.item()  # torch accepts a tensor lr
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _in_unit(v: float) -> bool:
    return 0.0 <= v < 1.0


# Value rules of the hyperparameters the suite's optimizers share (accepted values, test). The
# libraries check some of these late, partly (lr=0 passes) or not at all (adabound's final_lr),
# or with errors that do not say what is wrong ("'<' not supported between 'str' and 'float'").
_RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("a positive finite number", lambda v: 0.0 < v < math.inf),
    "final_lr": ("a positive finite number", lambda v: 0.0 < v < math.inf),
    "eps": ("a finite number >= 0", lambda v: 0.0 <= v < math.inf),
    "weight_decay": ("a finite number >= 0", lambda v: 0.0 <= v < math.inf),
    "momentum": ("a number in [0, 1)", _in_unit),
    "beta": ("a number in [0, 1)", _in_unit),
}


def _check_values(name: str, kwargs: Mapping[str, Any]) -> None:
    """One line per bad value, naming the key and what it accepts, before the library sees it."""
    defaults = _signature_defaults(name)

    def bad(key: str, accepted: str) -> ValueError:
        return ValueError(f"{key} must be {accepted}, got {kwargs[key]!r}")

    for key, value in kwargs.items():
        default = defaults.get(key)
        if key in _RULES:
            accepted, ok = _RULES[key]
            if not (_is_real(value) and ok(float(value))):
                raise bad(key, accepted)
        elif key == "betas":
            pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
            if not (pair and all(_is_real(b) and _in_unit(float(b)) for b in value)):
                raise bad(key, "a pair of numbers in [0, 1), e.g. [0.9, 0.999]")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise bad(key, "true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise bad(key, "an integer")
        elif isinstance(default, float) and not _is_real(value):
            raise bad(key, "a number")


def _spec(name: str) -> _Spec:
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(
            f"unknown optimizer name={name!r}; accepted values: {', '.join(BASELINE_NAMES)}"
        )
    return _SPECS[name]


def build_baseline(
    name: str, params: Iterable[torch.Tensor] | Iterable[dict], **cfg: Any
) -> torch.optim.Optimizer:
    """Build baseline ``name`` over ``params``: the paper's defaults, updated by ``cfg``.

    Raises ``ValueError`` for an unknown ``name`` or keyword. Sets ``opt.step_protocol``.
    """
    spec = _spec(name)
    accepted = accepted_keys(name)
    unknown = sorted(set(cfg) - accepted)
    if unknown:
        raise ValueError(
            f"unknown keyword argument {unknown[0]!r} for optimizer {name!r}; "
            f"accepted values: {', '.join(sorted(accepted))}"
        )
    kwargs = {**spec.defaults, **cfg}
    _check_values(name, kwargs)
    if "betas" in kwargs:
        # Configs deliver lists (or OmegaConf ListConfig); torch and the library expect a tuple.
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    if name == "radam" and not kwargs["weight_decouple"] and kwargs["weight_decay"] != 0.0:
        # pytorch_optimizer's RAdam only implements decoupled decay; False would drop it silently.
        raise ValueError(
            "weight_decouple=False is not supported for optimizer 'radam' (its weight decay "
            "would be ignored); accepted values: True"
        )
    try:
        opt = spec.cls(params, **kwargs)
    except (ValueError, TypeError, *_LIBRARY_ERRORS) as err:
        # what the constructors check beyond the rules above, as one ValueError line
        text = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(text) from None
    opt.step_protocol = spec.step_protocol
    return opt
