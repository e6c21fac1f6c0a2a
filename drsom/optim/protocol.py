"""The optimizer protocol: what the training loop, summaries, benchmarks and figures may rely on.

Every ``torch.optim.Optimizer`` can be driven through these functions, the suite's own (DRSOM,
the baselines) and any other one (``torch.optim.NAdam`` built directly) alike. An optimizer may
declare any of the hooks below; where it declares none the functions return the defaults of a
plain first-order optimizer, so no wrapper is ever needed.

=======================  ==================================  =====================================
function                 hook the optimizer may define       default without the hook
=======================  ==================================  =====================================
``step_protocol(opt)``   ``step_protocol``: str              ``"create_graph"`` for Hutchinson
                                                             optimizers (below), else ``"backward"``
``needs_double_``        ``needs_double_backward``: bool     True for ``"create_graph"``, else False
``backward(opt)``
``step_counts(opt)``     ``step_counts()`` -> mapping        1 forward, 1 gradient, and for
                                                             Hutchinson optimizers their HVPs
``step_diagnostics``     ``step_diagnostics()`` -> mapping   ``{}``
``(opt)``
``hyperparameters``      ``describe_hyperparameters()``      the first param group's plain
``(opt)``                -> mapping                          values
``state_numel(opt)``     ``state_numel()`` -> int            floating-point elements in
                                                             ``opt.state``
=======================  ==================================  =====================================

* **Stepping** (``step_protocol``): ``"backward"``: ``loss.backward(); opt.step()``;
  ``"create_graph"``: ``loss.backward(create_graph=True); opt.step()`` (Hutchinson Hessians);
  ``"closure"``: ``opt.step(closure)``, where ``closure()`` returns the mini-batch loss and does
  not call ``backward()`` (DRSOM). :func:`take_step` does it for any of the three.
* **Double backward** (``needs_double_backward``): the step differentiates a gradient again,
  which a ``torch.compile``'d model cannot do; runners refuse to compile for such an optimizer
  (AdaHessian, Sophia-H, DRSOM with ``hessian="hvp"``).
* **Oracle counts** (``step_counts``): the model evaluations the step *just made* took, as
  ``{"forward": n, "grad": n, "hvp": n}`` (keys :data:`ORACLES`), the training loop's own forward
  and backward included. Read it after ``opt.step``.
* **Diagnostics** (``step_diagnostics``): a flat mapping of floats about the step just made, which
  a loop logs under its keys without knowing them (DRSOM: ``rho``, ``radius``, ``accepted``,
  ``trials``, ``alpha_0``, ...; first-order optimizers: nothing). NaN marks "not defined this
  step" (e.g. ``rho`` when no trial was made). The keys should be the same every step (a
  run's tables take their columns from its first step) and may not be one of
  :data:`RESERVED_DIAGNOSTICS`, the names the training loop logs itself.
* **Hyperparameters** (``describe_hyperparameters``): the optimizer's own choices that are not in
  its param groups (DRSOM: ``hessian``, ``directions``, ``subproblem``), as plain values, for run
  summaries; :func:`hyperparameters` puts them beside the first param group's values.
* **State size** (``state_numel``): floating-point elements the optimizer keeps besides the
  parameters, for memory tables.

Hutchinson optimizers are recognised without a hook by what pytorch_optimizer's AdaHessian and
SophiaH carry: ``num_samples``, ``update_period`` and ``compute_hutchinson_hessian``. They draw
``num_samples`` Hessian-vector products on the steps where the estimate is refreshed: step ``s``
(counted from 1) refreshes when ``(s - 1) % update_period == 0``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ORACLES",
    "STEP_BACKWARD",
    "STEP_CLOSURE",
    "STEP_CREATE_GRAPH",
    "STEP_PROTOCOLS",
    "Description",
    "RESERVED_DIAGNOSTICS",
    "describe",
    "hyperparameters",
    "needs_double_backward",
    "state_numel",
    "step_counts",
    "step_diagnostics",
    "step_protocol",
    "take_step",
]

STEP_BACKWARD = "backward"
STEP_CREATE_GRAPH = "create_graph"
STEP_CLOSURE = "closure"
STEP_PROTOCOLS: tuple[str, ...] = (STEP_BACKWARD, STEP_CREATE_GRAPH, STEP_CLOSURE)

ORACLES: tuple[str, ...] = ("forward", "grad", "hvp")

# What the training loop logs beside an optimizer's diagnostics (drsom.training.loop.STEP_COLUMNS):
# an optimizer's diagnostic of one of these names would overwrite the loop's column.
RESERVED_DIAGNOSTICS: tuple[str, ...] = ("step", "epoch", "loss")


@dataclass(frozen=True)
class Description:
    """The static part of the protocol: how an optimizer is stepped and compiled."""

    step_protocol: str
    needs_double_backward: bool


def _is_hutchinson(opt: torch.optim.Optimizer) -> bool:
    marks = ("num_samples", "update_period", "compute_hutchinson_hessian")
    return all(hasattr(opt, name) for name in marks)


def step_protocol(opt: torch.optim.Optimizer) -> str:
    """How the training loop steps ``opt``: one of :data:`STEP_PROTOCOLS` (see the module doc)."""
    default = STEP_CREATE_GRAPH if _is_hutchinson(opt) else STEP_BACKWARD
    protocol = getattr(opt, "step_protocol", default)
    if protocol not in STEP_PROTOCOLS:
        raise ValueError(
            f"{type(opt).__name__}.step_protocol={protocol!r}; accepted values: "
            f"{', '.join(STEP_PROTOCOLS)}"
        )
    return protocol


def needs_double_backward(opt: torch.optim.Optimizer) -> bool:
    """Whether a step differentiates a gradient again (then ``torch.compile`` cannot be used)."""
    own = getattr(opt, "needs_double_backward", None)
    if own is not None:
        return bool(own)
    return step_protocol(opt) == STEP_CREATE_GRAPH


def describe(opt: torch.optim.Optimizer) -> Description:
    """The stepping protocol and the double-backward need of ``opt``, defaults included."""
    return Description(step_protocol(opt), needs_double_backward(opt))


def step_counts(opt: torch.optim.Optimizer) -> dict[str, int]:
    """Oracle calls of the step just made: ``{"forward", "grad", "hvp"}`` (call after the step)."""
    own = getattr(opt, "step_counts", None)
    if callable(own):
        counts = own()
        return {key: int(counts.get(key, 0)) for key in ORACLES}
    hvp = 0
    if _is_hutchinson(opt):
        done = int(opt.param_groups[0].get("step", 0))  # steps taken, this one included
        if done > 0 and (done - 1) % int(opt.update_period) == 0:
            hvp = int(opt.num_samples)
    return {"forward": 1, "grad": 1, "hvp": hvp}


def step_diagnostics(opt: torch.optim.Optimizer) -> dict[str, float]:
    """Flat ``{name: float}`` about the step just made (``{}`` for optimizers without the hook)."""
    own = getattr(opt, "step_diagnostics", None)
    if not callable(own):
        return {}
    out = {str(key): _float(value) for key, value in own().items()}
    clash = [key for key in RESERVED_DIAGNOSTICS if key in out]
    if clash:
        raise ValueError(
            f"{type(opt).__name__}.step_diagnostics() reports {clash[0]!r}, a name the training "
            f"loop logs itself; reserved names: {', '.join(RESERVED_DIAGNOSTICS)}"
        )
    return out


def hyperparameters(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The effective values of the first param group, with the optimizer's own choices.

    ``params`` left out, tuples as lists, other non-plain values as their ``repr`` (JSON-safe);
    ``describe_hyperparameters()`` (where defined) adds what is not in the param groups.
    """
    values = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    own = getattr(opt, "describe_hyperparameters", None)
    if callable(own):
        values.update(own())
    plain = (bool, int, float, str, type(None))
    return {
        str(k): list(v) if isinstance(v, tuple) else v if isinstance(v, plain) else repr(v)
        for k, v in values.items()
    }


def state_numel(opt: torch.optim.Optimizer) -> int:
    """Floating-point elements the optimizer keeps besides the parameters (its memory cost)."""
    own = getattr(opt, "state_numel", None)
    if callable(own):
        return int(own())
    return sum(_floating_numel(state) for state in opt.state.values())


def take_step(opt: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One step of ``opt`` on the mini-batch of ``closure`` by its protocol; returns the loss.

    ``closure()`` returns the loss without calling ``backward()`` (e.g.
    :func:`drsom.optim.make_closure`); for the backward protocols the gradients are zeroed with
    ``set_to_none=True`` first, which also breaks the reference cycle ``create_graph`` leaves.
    """
    protocol = step_protocol(opt)
    if protocol == STEP_CLOSURE:
        return opt.step(closure)
    opt.zero_grad(set_to_none=True)
    loss = closure()
    with warnings.catch_warnings():
        # torch warns that create_graph=True leaks through a parameter-gradient cycle; the
        # zero_grad(set_to_none=True) above breaks that cycle every step.
        warnings.filterwarnings("ignore", "Using backward.. with create_graph=True")
        loss.backward(create_graph=protocol == STEP_CREATE_GRAPH)
    opt.step()
    return loss


def _float(value) -> float:
    if value is None:
        return math.nan
    return float(value)


def _floating_numel(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() if obj.is_floating_point() else 0
    if isinstance(obj, Mapping):
        return sum(_floating_numel(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_floating_numel(v) for v in obj)
    return 0
