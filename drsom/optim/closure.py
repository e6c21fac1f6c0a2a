"""The mini-batch closure for DRSOM: one function, evaluated many times, seen as one forward.

DRSOM evaluates the loss of one mini-batch several times per step (the gradient at x, then
interpolation or finite-difference points and the trial points of the ratio test). Two things
must not change between those evaluations, or the ratio test compares different functions and
training statistics drift:

* BatchNorm running statistics are updated by the first evaluation only, the one at the current
  parameters, exactly as a first-order step would update them. Later evaluations still normalise
  with the batch statistics (the same function) but run with ``track_running_stats`` switched off
  for their duration, so nothing is written in place (a restore after the forward would clobber
  tensors that the backward of a finite-difference gradient still needs);
* random numbers inside the model (dropout) are the same in every evaluation: each call starts
  from the RNG state of the first call, and the global RNG is left where one forward leaves it,
  so the rest of the program (data augmentation, the next step) sees the same random stream
  however many trials a step needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["BatchClosure", "make_closure"]


def _rng_devices(model: nn.Module) -> list[int]:
    devs = {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
    return sorted(devs)


class _RNGState:
    def __init__(self, cuda_devices: list[int]):
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in cuda_devices]
        self.devices = cuda_devices

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for d, s in zip(self.devices, self.cuda, strict=True):
            torch.cuda.set_rng_state(s, d)


class BatchClosure:
    """``closure()`` -> the loss of ``loss_fn(model(inputs), targets)`` as a scalar tensor.

    It never calls ``backward()``. After the first call, ``outputs`` holds that call's model
    outputs (detached) for accuracy bookkeeping and ``loss`` its loss. ``autocast`` is an optional
    context-manager factory (e.g. ``lambda: torch.autocast("cuda", torch.bfloat16)``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    ):
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.autocast = autocast or contextlib.nullcontext
        self.calls = 0
        self.outputs: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self._norms = [
            m
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        ]
        self._cuda = _rng_devices(model)
        self._rng_before: _RNGState | None = None
        self._rng_after: _RNGState | None = None
        self._saved: list[list[torch.Tensor]] = []  # BatchNorm statistics kept by checkpoint()

    def _forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            out = self.model(self.inputs)
            loss = self.loss_fn(out, self.targets)
        return out, loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            self._rng_before = _RNGState(self._cuda)
            out, loss = self._forward()
            self._rng_after = _RNGState(self._cuda)
            self.outputs, self.loss = out.detach(), loss.detach()
            return loss
        tracked = [m for m in self._norms if m.training]
        for m in tracked:
            m.track_running_stats = False
        self._rng_before.restore()
        try:
            _, loss = self._forward()
        finally:
            for m in tracked:
                m.track_running_stats = True
            self._rng_after.restore()
        return loss

    def checkpoint(self) -> None:
        """Keep BatchNorm's running statistics as they are now, for :meth:`rewind`."""
        self._saved = [
            [b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)
             if b is not None]
            for m in self._norms
        ]  # fmt: skip

    def rewind(self) -> None:
        """Undo the first call: BatchNorm's statistics as at :meth:`checkpoint` (before it),
        the random state as before it, and the next call counts as the first again. DRSOM rewinds
        after its guard rejected the loss of that call (the parameters were then moved back)."""
        for m, saved in zip(self._norms, self._saved, strict=True):
            bufs = [b for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                    if b is not None]  # fmt: skip
            torch._foreach_copy_(bufs, saved)
        if self._rng_before is not None:
            self._rng_before.restore()
        self.calls = 0
        self.outputs = self.loss = None


def make_closure(model, loss_fn, inputs, targets, autocast=None) -> BatchClosure:
    """Build the closure a training loop passes to ``DRSOM.step`` for one mini-batch.

    First-order optimizers can use the same object: ``loss = closure(); loss.backward()``.
    """
    return BatchClosure(model, loss_fn, inputs, targets, autocast)
