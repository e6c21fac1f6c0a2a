"""DRSOM over several processes: what each step reduces, and the reducer that does it.

Data-parallel DRSOM runs one replica per process on its shard of every mini-batch. Each step takes
global decisions from the loss (accept or reject, grow or shrink the radius, try again, undo an
untested step), so every number a decision reads must be the same on every process, or the
replicas take different steps and drift apart without an error (or one process waits in a
collective the others skipped: a hang). ``DRSOM(..., reduce=mean_over())`` averages, in place:

* the gradient at x (row 0 of the direction matrix, right after the backward): the directions,
  the Gram matrix ``G``, ``c`` and the diagonal curvature sources' moments follow from it and
  from x, the same everywhere, so they need no reduction of their own;
* the loss at x (before the guard judges an untested step) and at every trial point (one scalar
  all-reduce per trial);
* what a curvature source measures on the local shard: the function values of ``interp``, the
  products ``V g(x + t v)`` of ``fd`` (k numbers per point; the mean of ``V g_r`` is ``V`` times
  the mean gradient) and ``V H v`` of ``hvp`` (k numbers per product: each process differentiates
  its own loss twice, and the average of the shards' Hessians is the global one).

For shards of one size and a loss that is a mean over the shard, every reduced number is what one
process computes on the whole batch, up to the order of float additions. The model's forward is
the closure's: with ``torch.nn.parallel.DistributedDataParallel`` build the closure on the
wrapped module's ``.module`` (DRSOM reduces the gradient itself; DDP's reducer would only add
an all-reduce, and its buffer broadcast would run on every trial forward).

A ``reduce`` is any callable that averages a tensor in place across the processes, called in the
same order on every process: :func:`mean_over` builds one on ``torch.distributed`` (any backend,
any process group). torch.distributed's ``all_reduce`` has no average for gloo, hence the sum and
division here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = ["Reduce", "mean_over", "no_reduce"]

Reduce = Callable[[torch.Tensor], None]


def no_reduce(tensor: torch.Tensor) -> None:
    """One process: nothing to average."""


def mean_over(group: dist.ProcessGroup | None = None) -> Reduce:
    """A ``reduce`` that averages a tensor in place over ``group`` (default: every process)."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "DRSOM: reduce=mean_over() needs torch.distributed initialised first "
            "(torch.distributed.init_process_group)"
        )
    size = dist.get_world_size(group)

    def reduce(tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        tensor.div_(size)

    return reduce
