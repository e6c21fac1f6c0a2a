"""Library optimizers made to fit the AdaBelief CIFAR protocol: L2 weight decay for two of them.

The baselines themselves are configs (``configs/optimizer/*.yaml``) naming the library classes
(``torch.optim.Adam``, ``pytorch_optimizer.AdaBelief``, ...); how the protocol's weight decay
applies to each is in docs/usage.md ("Weight decay"). pytorch_optimizer's MSVAG and Fromage have no
weight-decay option; the classes here add it as L2, as the AdaBelief paper's code did for MSVAG.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_optimizer as po
import torch


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
