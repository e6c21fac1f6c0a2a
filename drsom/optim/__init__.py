"""DRSOM and the baseline optimizers of the suite.

``DRSOM`` is the optimizer; ``make_closure`` builds the BatchNorm- and dropout-safe closure it
steps with; ``optimizer_factory(node)`` builds any optimizer from its ``_target_`` config and
``build(name, params)`` the suite's own by config name;
:mod:`drsom.optim.protocol` says, for any ``torch.optim`` optimizer, how to step it, whether it
needs double backward, what each step cost and what it reports.

DRSOM's step is in ``drsom.py``; its parts beside it: the direction sets (``directions``), the
curvature sources and the ``Probe`` they evaluate the model through (``curvature``), the step
controllers (``control``) and the k x k subproblem (``subproblem``); the flat parameter buffer
(``flat``) and the constructor's argument checks (``arguments``).

Floor 2: may import ``drsom.cfg`` only: the optimizers work without the suite around them.
"""

from .closure import BatchClosure, make_closure
from .drsom import DRSOM, PRESETS
from .factory import OPTIMIZER_META, build, optimizer_factory
from .protocol import (
    ORACLES,
    RESERVED_DIAGNOSTICS,
    describe,
    hyperparameters,
    needs_double_backward,
    state_numel,
    step_counts,
    step_diagnostics,
    step_protocol,
    take_step,
)

__all__ = [
    "DRSOM",
    "OPTIMIZER_META",
    "ORACLES",
    "PRESETS",
    "RESERVED_DIAGNOSTICS",
    "BatchClosure",
    "build",
    "describe",
    "hyperparameters",
    "make_closure",
    "optimizer_factory",
    "needs_double_backward",
    "state_numel",
    "step_counts",
    "step_diagnostics",
    "step_protocol",
    "take_step",
]
