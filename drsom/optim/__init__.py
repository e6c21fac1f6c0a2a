"""DRSOM and the baseline optimizers of the suite.

``DRSOM`` is the optimizer; ``make_closure`` builds the BatchNorm- and dropout-safe closure it
steps with; ``build(name, params, **cfg)`` makes any optimizer of the suite by name.
"""

from .closure import BatchClosure, make_closure
from .drsom import DRSOM, PRESETS
from .factory import OPTIMIZER_NAMES, build, step_protocol

__all__ = [
    "DRSOM",
    "OPTIMIZER_NAMES",
    "PRESETS",
    "BatchClosure",
    "build",
    "make_closure",
    "step_protocol",
]
