"""BatchNorm's running statistics without the bias of their starting values.

BatchNorm keeps an exponential average of the batch statistics, ``r <- (1 - m) r + m b`` with
``m = 0.1``, started at mean 0 and variance 1: after t batches the start still weighs ``0.9^t``
(35% after 10, 4% after 30). Evaluation mode normalises with it, so early evaluations measure a
network the optimizer never trained. On the digits data (10 steps an epoch) a DRSOM run of
ResNet-18, whose weights hardly moved in norm, scored 0.09 in evaluation mode after its first
epoch, 0.90 with statistics re-estimated at the same weights (docs/studies.md, "BatchNorm and
evaluation mode"). ``debias_batchnorm`` corrects the average as Adam corrects its moments: batch
t (1-based) enters with weight ``max(m, 1 / t)``, a plain mean of the batches seen until ``1 / m``
of them, the usual average afterwards; the training itself is unchanged (training mode
normalises with the batch's own statistics). PyTorch has the plain mean (``momentum=None``) and
the average, not this; it is kept here because the count it needs, ``num_batches_tracked``, is a
buffer of the module, saved and restored with the model and rewound by DRSOM's closure.
"""

from __future__ import annotations

from torch import nn

__all__ = ["debias_batchnorm"]


def _debias(module: nn.modules.batchnorm._BatchNorm, args) -> None:
    if module.training and module.track_running_stats:
        # the forward adds 1 to the count and then weighs this batch by `momentum`
        seen = int(module.num_batches_tracked)
        module.momentum = max(module._momentum_after_warmup, 1.0 / (seen + 1))


def debias_batchnorm(model: nn.Module) -> int:
    """Give every BatchNorm layer of ``model`` that keeps running statistics with a momentum the
    bias-corrected average above; returns how many layers it changed."""
    changed = 0
    for module in model.modules():
        if (
            isinstance(module, nn.modules.batchnorm._BatchNorm)
            and module.track_running_stats
            and module.momentum is not None
        ):
            module._momentum_after_warmup = module.momentum
            module.register_forward_pre_hook(_debias)
            changed += 1
    return changed
