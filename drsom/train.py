"""The training loop: one code path for DRSOM and the baselines, resumable bit for bit.

Every optimizer is stepped on the same mini-batch closure (``drsom.optim.make_closure``): DRSOM
calls it itself, as often as its ratio test needs (``opt.step(closure)``); the others call it
once and differentiate it (``loss = closure(); loss.backward(); opt.step()``, with
``create_graph`` for the Hutchinson methods). Either way ``closure.loss`` and ``closure.outputs``
are the first forward at the current parameters, so losses and accuracies mean the same thing.

``Trainer.state_dict`` holds everything the future of a run depends on: model, optimizer and
scheduler states, the global RNG states (dropout, Hutchinson probes), the counters and the rows so
far. Batches are a function of (seed, epoch) (``EpochLoader.set_epoch``), so a run restored at an
epoch boundary continues exactly as if it had never stopped.

A run can also stop between two steps of an epoch (a preemption signal: ``should_stop``): the
trainer raises ``Paused`` and its state then also holds the position inside the epoch (batches done
and the epoch's running sums), from which a restored trainer finishes that epoch exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from drsom.data import DataBundle
from drsom.optim import make_closure, step_protocol

METRIC_COLUMNS = (
    "epoch",  # epochs completed (1-based)
    "step",  # optimizer steps so far
    "train_loss",  # mean over the epoch's examples, each at the parameters before its step
    "train_acc",  # fraction in [0, 1], same forward as train_loss
    "test_loss",  # empty on epochs without evaluation (trainer.eval_every)
    "test_acc",  # fraction in [0, 1]
    "lr",  # lr during the epoch (DRSOM: the step bound)
    "radius",  # DRSOM: trust radius after the epoch's last step (regularized: its step length)
    "accept_rate",  # DRSOM: fraction of this epoch's steps whose trial was accepted
    "train_seconds",  # cumulative seconds in training steps (no evaluation, no bookkeeping)
    "total_seconds",  # cumulative wall-clock seconds of all epochs (evaluation and saving too)
    "forward",  # cumulative forward passes of the training loop (evaluation not counted)
    "grad",  # cumulative gradient evaluations
    "hvp",  # cumulative Hessian-vector products
)
STEP_COLUMNS = ("step", "epoch", "loss", "rho", "radius", "alpha", "accept_rate", "trials", "lam")
WALL_CLOCK_COLUMNS = ("train_seconds", "total_seconds")

PROGRESS_EVERY = 10  # steps between progress-bar updates (each one waits for the device)


class Paused(Exception):
    """Training stopped inside an epoch because ``Trainer.should_stop()`` said so.

    ``Trainer.state_dict()`` then holds the position inside the epoch; nothing is lost.
    """

    def __init__(self, epoch: int, batch: int, batches: int):
        super().__init__(f"paused in epoch {epoch} after batch {batch}/{batches}")
        self.epoch, self.batch, self.batches = epoch, batch, batches


class Diverged(Exception):
    """The training loss became non-finite."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"non-finite training loss in epoch {epoch} (step {step})")
        self.epoch, self.step = epoch, step


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        # plain lists, so a checkpoint loads with torch.load(weights_only=True)
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


def hutchinson_products(opt: torch.optim.Optimizer) -> int:
    """HVPs the next step of AdaHessian / Sophia-H will take: ``num_samples`` on refresh steps.

    Mirrors pytorch_optimizer's rule (refresh when ``step % update_period == 0``, counted from 0).
    """
    done = int(opt.param_groups[0].get("step", 0))
    return int(opt.num_samples) if done % int(opt.update_period) == 0 else 0


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        data: DataBundle,
        *,
        epochs: int,
        eval_every: int = 1,
        log_every_steps: int = 0,
        net: nn.Module | None = None,
        autocast: Callable | None = None,
        progress: bool = False,
        on_log_step: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        # net: what runs forward (maybe compiled). ``is None``, not ``or``: a compiled module has no
        # truth value (torch asks it for len() and raises).
        self.model, self.net = model, model if net is None else net
        self.optimizer, self.scheduler, self.data = optimizer, scheduler, data
        self.epochs, self.eval_every, self.log_every_steps = epochs, eval_every, log_every_steps
        self.autocast, self.progress, self.on_log_step = autocast, progress, on_log_step
        self.should_stop = should_stop  # asked after every step but an epoch's last: pause?
        self.protocol = step_protocol(optimizer)
        self.is_drsom = self.protocol == "closure"
        self.device = next(model.parameters()).device
        self.epoch = 0  # epochs completed
        self.step = 0
        self.counts = {"forward": 0, "grad": 0, "hvp": 0}
        self.seconds = {"train": 0.0, "total": 0.0}
        self.metrics: list[dict] = []
        self.steps: list[dict] = []
        self.partial: dict[str, Any] | None = None  # position inside the epoch after a Paused

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "counts": dict(self.counts),
            "seconds": dict(self.seconds),
            "metrics": list(self.metrics),
            "steps": list(self.steps),
            "partial": dict(self.partial) if self.partial else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.counts, self.seconds = dict(state["counts"]), dict(state["seconds"])
        self.metrics, self.steps = list(state["metrics"]), list(state["steps"])
        self.partial = state.get("partial")  # absent in checkpoints of epoch boundaries only
        set_rng_state(state["rng"])  # last: nothing above may consume random numbers after it

    # ----------------------------------------------------------------------------- loop
    def run_epochs(self) -> Iterator[dict]:
        """Train the remaining epochs; yield each epoch's metrics row (the caller saves it)."""
        mark = time.perf_counter()
        while self.epoch < self.epochs:
            lr = float(self.optimizer.param_groups[0]["lr"])
            try:
                train = self.train_epoch()
            except Paused:
                self.seconds["total"] += time.perf_counter() - mark
                raise
            if self.scheduler is not None:
                self.scheduler.step()
            self.epoch += 1
            test_loss = test_acc = math.nan
            if self.epoch % self.eval_every == 0 or self.epoch == self.epochs:
                test_loss, test_acc = self.evaluate()
            now = time.perf_counter()
            self.seconds["total"] += now - mark
            mark = now
            row = {"epoch": self.epoch, "step": self.step, **train, "test_loss": test_loss}
            row.update(test_acc=test_acc, lr=lr, **self._cumulative())
            self.metrics.append(row)
            yield row  # the caller's saving time falls into the next epoch's total

    def train_epoch(self) -> dict[str, float]:
        self.net.train()
        loader = self.data.train
        loader.set_epoch(self.epoch)  # the batches of epoch e depend on (seed, e) only
        # A paused epoch goes on from where it stopped, with the sums of the batches before.
        done, self.partial = self.partial or {}, None
        steps = int(done.get("batches", 0))
        loss_sum = torch.tensor(done.get("loss_sum", 0.0), dtype=torch.float64, device=self.device)
        correct = torch.tensor(done.get("correct", 0), dtype=torch.int64, device=self.device)
        seen, accepted = int(done.get("seen", 0)), int(done.get("accepted", 0))
        window: list[dict] = list(done.get("window", []))
        bar = tqdm(
            # Batch i of an epoch is a function of (seed, epoch, i): skipping is exact.
            itertools.islice(loader, steps, None),
            total=len(loader),
            initial=steps,
            desc=f"epoch {self.epoch + 1}/{self.epochs}",
            disable=None if self.progress else True,  # None: off when not a terminal (job logs)
            leave=False,
            dynamic_ncols=True,
        )
        self._sync()
        start = time.perf_counter()
        for inputs, targets in bar:
            closure = make_closure(self.net, F.cross_entropy, inputs, targets, self.autocast)
            self._optimizer_step(closure)
            self.step += 1
            steps += 1
            seen += len(targets)
            loss_sum += closure.loss.double() * len(targets)
            correct += (closure.outputs.argmax(1) == targets).sum()
            postfix: dict[str, str] = {}
            if self.is_drsom:
                info = self.optimizer.last_step
                accepted += info["accepted"]
                if not math.isfinite(info["loss"]):
                    raise Diverged(self.epoch + 1, self.step)
                if self.log_every_steps:
                    window.append(_window_entry(info))
                    if self.step % self.log_every_steps == 0:
                        self._log_steps(window)
                        window = []
                postfix = {"rho": f"{info['rho']:.2f}", "radius": f"{info['radius']:.3g}"}
            if steps % PROGRESS_EVERY == 0 or steps == len(loader):
                mean_loss = loss_sum.item() / seen  # waits for the device: only now and then
                if not math.isfinite(mean_loss):
                    raise Diverged(self.epoch + 1, self.step)
                bar.set_postfix(
                    loss=f"{mean_loss:.4f}", acc=f"{correct.item() / seen:.3f}", **postfix
                )
            if steps < len(loader) and self.should_stop is not None and self.should_stop():
                self._sync()
                self.seconds["train"] += time.perf_counter() - start
                self.partial = {
                    "epoch": self.epoch,
                    "batches": steps,
                    "loss_sum": loss_sum.item(),  # float64 both ways: the sums resume exactly
                    "correct": int(correct.item()),
                    "seen": seen,
                    "accepted": int(accepted),
                    "window": window,
                }
                bar.close()
                raise Paused(self.epoch + 1, steps, len(loader))
        self._sync()
        self.seconds["train"] += time.perf_counter() - start
        self.optimizer.zero_grad(set_to_none=True)  # frees create_graph graphs before evaluation
        row = {"train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen}
        if self.is_drsom:
            row.update(
                radius=float(self.optimizer.last_step["radius"]), accept_rate=accepted / steps
            )
        return row

    def _optimizer_step(self, closure) -> None:
        if self.protocol == "closure":
            self.optimizer.step(closure)
            cost = self.optimizer.last_step
            self._count(cost["forward"], cost["grad"], cost["hvp"])
            return
        hvps = hutchinson_products(self.optimizer) if self.protocol == "create_graph" else 0
        self.optimizer.zero_grad(set_to_none=True)  # also breaks create_graph's grad cycles
        loss = closure()
        with warnings.catch_warnings():
            # torch warns that create_graph=True leaks through a parameter-gradient cycle; the
            # zero_grad(set_to_none=True) above breaks that cycle every step.
            warnings.filterwarnings("ignore", "Using backward.. with create_graph=True")
            loss.backward(create_graph=self.protocol == "create_graph")
        self.optimizer.step()
        self._count(1, 1, hvps)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on the test set (eval mode: BatchNorm running stats)."""
        self.net.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for inputs, targets in self.data.test:
            with (self.autocast or contextlib.nullcontext)():
                outputs = self.net(inputs)
            loss_sum += F.cross_entropy(outputs.float(), targets, reduction="sum").double()
            correct += (outputs.argmax(1) == targets).sum()
            seen += len(targets)
        return loss_sum.item() / seen, correct.item() / seen

    # --------------------------------------------------------------------------- helpers
    def _count(self, forward: int, grad: int, hvp: int) -> None:
        self.counts["forward"] += forward
        self.counts["grad"] += grad
        self.counts["hvp"] += hvp

    def _cumulative(self) -> dict[str, float]:
        return {
            "train_seconds": self.seconds["train"],
            "total_seconds": self.seconds["total"],
            **self.counts,
        }

    def _log_steps(self, window: list[dict]) -> None:
        last = window[-1]
        row = {
            "step": self.step,
            "epoch": self.epoch + 1,
            # float(): the optimizer may report numpy scalars, which a weights-only
            # torch.load of the checkpoint would refuse
            **{k: float(last[k]) for k in ("loss", "rho", "radius", "lam")},
            "alpha": [float(a) for a in last["alpha"]],
            "accept_rate": sum(s["accepted"] for s in window) / len(window),
            "trials": sum(s["trials"] for s in window) / len(window),
        }
        self.steps.append(row)
        if self.on_log_step is not None:
            self.on_log_step(row)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _window_entry(info: dict) -> dict[str, Any]:
    """What ``_log_steps`` reads of a DRSOM step, as plain Python numbers.

    The window of a paused epoch goes into the checkpoint, which loads with
    ``torch.load(weights_only=True)``: no numpy scalars.
    """
    entry = {k: float(info[k]) for k in ("loss", "rho", "radius", "lam")}
    entry.update(
        alpha=[float(a) for a in info["alpha"]],
        accepted=int(info["accepted"]),
        trials=int(info["trials"]),
    )
    return entry
