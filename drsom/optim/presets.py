"""Named DRSOM presets as importable targets: ``_target_: drsom.optim.presets.official``.

Each is DRSOM with a preset's constants (:data:`drsom.optim.drsom.PRESETS`) as its defaults;
a config sets only what it changes. The function's signature is DRSOM's with those defaults, so
the config's keywords are checked against it like any optimizer's.
"""

from __future__ import annotations

import inspect

from drsom.optim.drsom import DRSOM, PRESETS

__all__ = ["official"]


def _preset_signature(name: str) -> inspect.Signature:
    values = PRESETS[name]
    own = inspect.signature(DRSOM.__init__).parameters.values()
    parameters = [p.replace(default=values.get(p.name, p.default)) for p in own if p.name != "self"]
    return inspect.Signature(parameters, return_annotation=DRSOM)


def official(params, **overrides) -> DRSOM:
    """DRSOM with the official code's constants (COPT-Public/pydrsom): regularized subproblem,
    exact HVPs, step cap 10, eta 0.08, gamma x50 / 30, momentum EMA 0.3, 15 trials."""
    return DRSOM.preset("official", params, **overrides)


official.__signature__ = _preset_signature("official")
