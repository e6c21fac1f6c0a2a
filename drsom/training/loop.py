"""The training loop: one code path for every optimizer, resumable bit for bit.

The loop knows optimizers only through the optimizer protocol (:mod:`drsom.optim.protocol`):
every optimizer is stepped on the same mini-batch closure (``drsom.optim.make_closure``) by
``take_step``, which calls ``opt.step(closure)`` for closure optimizers (they evaluate it as often
as they need) and differentiates it once for the others (``create_graph`` where the optimizer
asks for it). Either way ``closure.loss`` and ``closure.outputs`` are the first forward at the
current parameters, so losses and accuracies mean the same thing for every optimizer. What a
step cost comes from ``step_counts``; what it reports from ``step_diagnostics``, a flat mapping
the loop logs under the optimizer's own keys without knowing them:

* ``steps.csv`` (every ``log_every_steps`` steps): ``STEP_COLUMNS`` (step, epoch, loss), then the
  diagnostics of that step, one column per key;
* ``metrics.csv`` (every epoch): ``METRIC_COLUMNS``, then ``<key>_mean`` per diagnostic key.

The diagnostic columns of a run are the keys of its first step's diagnostics, kept in the state
(so a resumed run writes the same header). A key that appears later is not logged and a key that
disappears is left empty, each said once in a warning: a table's header never changes mid-run.

``Trainer.state_dict`` holds everything the future of a run depends on: model, optimizer and
scheduler states, the global RNG states (dropout, Hutchinson probes), the counters and the rows so
far. Batches are a function of (seed, epoch) (``EpochLoader.set_epoch``), so a run restored at an
epoch boundary continues exactly as if it had never stopped.

Data-parallel (``world``: :mod:`drsom.training.world`), every process steps its shard of each
global batch. The loss of a shard is its sum of cross-entropies over the global batch's mean
count per process (n / P), so the average over processes that DRSOM's ``reduce`` and
``DistributedDataParallel`` take is the global batch's mean loss and gradient exactly, also for a
last batch whose shards are one example apart. The epoch's sums, the pause decision and each
logged step's loss are reduced; evaluation shards the evaluation sets too, after every process
took rank 0's BatchNorm running statistics (each process normalises its shard by its own batch
statistics in training, as under DDP without SyncBatchNorm). Each process reseeds the global RNG
every step from (seed, step, rank): dropout masks are a function of the step, so the processes'
random streams need no checkpoint of their own.

A run can also stop between two steps of an epoch (a preemption signal: ``should_stop``): the
trainer raises ``Paused`` and its state then also holds the position inside the epoch (batches done
and the epoch's running sums), from which a restored trainer finishes that epoch exactly.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from drsom.data import DataBundle, epoch_seed
from drsom.optim import make_closure, step_counts, step_diagnostics, take_step
from drsom.training.world import World

log = logging.getLogger("drsom")

METRIC_COLUMNS = (
    "epoch",  # epochs completed (1-based)
    "step",  # optimizer steps so far
    # running means over the epoch's batches, each at the parameters before its step, in train
    # mode on augmented inputs (dropout, BatchNorm batch statistics): not the model's accuracy
    # on the training set, which is train_eval_*
    "train_loss",
    "train_acc",  # fraction in [0, 1], same forward as train_loss
    # evaluation mode (BatchNorm running statistics, no dropout, no augmentation), at the
    # parameters after the epoch, on epochs with evaluation (trainer.eval_every), else empty
    "test_loss",
    "test_acc",  # fraction in [0, 1]
    "val_loss",  # the validation split held out of the training set (data.val_size); empty: none
    "val_acc",
    "train_eval_loss",  # a fixed slice of the training split (as many as the test set, or all)
    "train_eval_acc",
    "lr",  # lr during the epoch (param group 0; what it means is the optimizer's)
    "train_seconds",  # cumulative seconds in training steps (no evaluation, no bookkeeping)
    "total_seconds",  # cumulative wall-clock seconds of all epochs (evaluation and saving too)
    "forward",  # cumulative forward passes of the training loop (evaluation not counted)
    "grad",  # cumulative gradient evaluations
    "hvp",  # cumulative Hessian-vector products
    # then one "<key>_mean" column per diagnostic key of the optimizer (see the module doc): the
    # mean of that diagnostic over the epoch's steps, NaN values ("not defined this step")
    # skipped, empty when no step of the epoch defined it; e.g. a 0/1 "accepted" gives the
    # fraction of accepted steps. Means, not last values: an epoch's row summarises all its steps.
)
STEP_COLUMNS = (
    "step",  # optimizer steps so far, this one included
    "epoch",  # the epoch the step belongs to (1-based)
    "loss",  # the step's mini-batch loss at the parameters before it (closure.loss)
    # then the step's diagnostics, one column per key (empty where NaN)
)
WALL_CLOCK_COLUMNS = ("train_seconds", "total_seconds")
EVALUATED = ("test_loss", "test_acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc")

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
        world: World | None = None,
        train_net: nn.Module | None = None,
    ):
        # net: what runs forward (maybe compiled). ``is None``, not ``or``: a compiled module has no
        # truth value (torch asks it for len() and raises). train_net: what the training steps
        # call, when not net (DistributedDataParallel around it, for first-order optimizers).
        self.model, self.net = model, model if net is None else net
        self.train_net = self.net if train_net is None else train_net
        self.world = World() if world is None else world
        self.optimizer, self.scheduler, self.data = optimizer, scheduler, data
        self.epochs, self.eval_every, self.log_every_steps = epochs, eval_every, log_every_steps
        self.autocast, self.progress, self.on_log_step = autocast, progress, on_log_step
        self.should_stop = should_stop  # asked after every step but an epoch's last: pause?
        self.device = next(model.parameters()).device
        self.epoch = 0  # epochs completed
        self.step = 0
        self.counts = {"forward": 0, "grad": 0, "hvp": 0}
        self.seconds = {"train": 0.0, "total": 0.0}
        self.metrics: list[dict] = []
        self.steps: list[dict] = []
        # the optimizer's diagnostic keys: the columns of its tables (None until the first step)
        self.diagnostic_keys: tuple[str, ...] | None = None
        self._odd_keys: set[str] = set()  # keys off the first step's, warned about once
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
            "diagnostic_keys": None if self.diagnostic_keys is None else list(self.diagnostic_keys),
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
        keys = state.get("diagnostic_keys")
        self.diagnostic_keys = None if keys is None else tuple(keys)
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
            evaluated = dict.fromkeys(EVALUATED, math.nan)
            if self.epoch % self.eval_every == 0 or self.epoch == self.epochs:
                self.world.share_buffers(self.model)
                for split, loader in self._evaluation_splits():
                    loss, acc = self.evaluate(loader)
                    evaluated |= {f"{split}_loss": loss, f"{split}_acc": acc}
            now = time.perf_counter()
            self.seconds["total"] += now - mark
            mark = now
            row = {"epoch": self.epoch, "step": self.step, **train, **evaluated}
            row.update(lr=lr, **self._cumulative())
            self.metrics.append(row)
            yield row  # the caller's saving time falls into the next epoch's total

    def train_epoch(self) -> dict[str, float]:
        self.train_net.train()
        loader, world = self.data.train, self.world
        loader.set_epoch(self.epoch)  # the batches of epoch e depend on (seed, e) only
        # A paused epoch goes on from where it stopped, with the sums of the batches before:
        # the processes' totals, carried by rank 0 alone (the others' shares restart at zero).
        done, self.partial = self.partial or {}, None
        steps = int(done.get("batches", 0))
        carried = done if world.main else {}
        loss_sum = torch.tensor(
            carried.get("loss_sum", 0.0), dtype=torch.float64, device=self.device
        )
        correct = torch.tensor(carried.get("correct", 0), dtype=torch.int64, device=self.device)
        seen = int(carried.get("seen", 0))

        def totals() -> torch.Tensor:
            return _totals(world, loss_sum, correct, seen)

        # per diagnostic key: [sum, steps that defined it] over this epoch's steps
        sums: dict[str, list] = {k: list(v) for k, v in done.get("diagnostic_sums", {}).items()}
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
            loss_fn, weight = F.cross_entropy, len(targets)
            if world.size > 1:
                torch.manual_seed(epoch_seed(loader.seed, self.step, f"rank {world.rank}"))
                weight = loader.global_size(steps) / world.size
                loss_fn = functools.partial(_shard_loss, per=weight)
            closure = make_closure(self.train_net, loss_fn, inputs, targets, self.autocast)
            self._optimizer_step(closure)
            self.step += 1
            steps += 1
            seen += len(targets)
            loss_sum += closure.loss.double() * weight
            correct += (closure.outputs.argmax(1) == targets).sum()
            diagnostics = self._diagnostics()
            for key, value in diagnostics.items():
                if not math.isnan(value):
                    total = sums.setdefault(key, [0.0, 0])
                    total[0] += value
                    total[1] += 1
            if self.log_every_steps and self.step % self.log_every_steps == 0:
                loss = world.sum_(closure.loss.detach().double().clone()) / world.size
                self._log_step(float(loss), diagnostics)
            if steps % PROGRESS_EVERY == 0 or steps == len(loader):
                # waits for the device (and the other processes): only now and then
                mean_loss, acc = _means(totals())
                if not math.isfinite(mean_loss):
                    raise Diverged(self.epoch + 1, self.step)
                bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{acc:.3f}")
            stop = self.should_stop is not None and self.should_stop()
            # every process asks, every step (the signal may reach one process first)
            if steps < len(loader) and world.any(stop, self.device):
                self._sync()
                self.seconds["train"] += time.perf_counter() - start
                loss_total, correct_total, seen_total = totals().tolist()
                self.partial = {
                    "epoch": self.epoch,
                    "batches": steps,
                    "loss_sum": loss_total,  # float64 both ways: the sums resume exactly
                    "correct": int(correct_total),
                    "seen": int(seen_total),
                    "diagnostic_sums": {k: list(v) for k, v in sums.items()},  # Python floats
                }
                bar.close()
                raise Paused(self.epoch + 1, steps, len(loader))
        self._sync()
        self.seconds["train"] += time.perf_counter() - start
        self.optimizer.zero_grad(set_to_none=True)  # frees create_graph graphs before evaluation
        train_loss, train_acc = _means(totals())
        row = {"train_loss": train_loss, "train_acc": train_acc}
        for key in self.diagnostic_keys or ():
            total, n = sums.get(key, (0.0, 0))
            row[f"{key}_mean"] = total / n if n else math.nan
        return row

    def _optimizer_step(self, closure) -> None:
        """One step by the optimizer's protocol, counted by what it reports it cost."""
        take_step(self.optimizer, closure)
        for key, n in step_counts(self.optimizer).items():
            self.counts[key] += n

    def _diagnostics(self) -> dict[str, float]:
        """The step's diagnostics under the run's keys: those of its first step (module doc)."""
        diagnostics = step_diagnostics(self.optimizer)
        if self.diagnostic_keys is None:
            self.diagnostic_keys = tuple(diagnostics)
        keys = self.diagnostic_keys
        odd = (set(diagnostics) ^ set(keys)) - self._odd_keys
        if odd:
            self._odd_keys |= odd
            log.warning(
                f"{type(self.optimizer).__name__}: step {self.step} reports the diagnostics "
                f"{sorted(diagnostics)}, the run's tables have {sorted(keys)}: "
                f"{sorted(odd)} left out or empty from here on"
            )
        return {key: diagnostics.get(key, math.nan) for key in keys}

    def metric_columns(self) -> tuple[str, ...]:
        """The columns of ``metrics.csv``: the fixed ones, then ``<key>_mean`` per diagnostic."""
        return METRIC_COLUMNS + tuple(f"{key}_mean" for key in self.diagnostic_keys or ())

    def step_columns(self) -> tuple[str, ...]:
        """The columns of ``steps.csv``: step, epoch, loss, then the diagnostics' keys."""
        return STEP_COLUMNS + tuple(self.diagnostic_keys or ())

    def _evaluation_splits(self) -> Iterator[tuple[str, Any]]:
        yield "test", self.data.test
        if self.data.val is not None:
            yield "val", self.data.val
        if self.data.train_eval is not None:
            yield "train_eval", self.data.train_eval

    @torch.no_grad()
    def evaluate(self, loader=None) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``loader`` (default: the test set), in eval mode
        (BatchNorm running stats, no dropout); each process its shard of every batch."""
        self.net.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for inputs, targets in self.data.test if loader is None else loader:
            if not len(targets):  # a batch smaller than the number of processes
                continue
            with (self.autocast or contextlib.nullcontext)():
                outputs = self.net(inputs)
            loss_sum += F.cross_entropy(outputs.float(), targets, reduction="sum").double()
            correct += (outputs.argmax(1) == targets).sum()
            seen += len(targets)
        return _means(_totals(self.world, loss_sum, correct, seen))

    # --------------------------------------------------------------------------- helpers
    def _cumulative(self) -> dict[str, float]:
        return {
            "train_seconds": self.seconds["train"],
            "total_seconds": self.seconds["total"],
            **self.counts,
        }

    def _log_step(self, loss: float, diagnostics: Mapping[str, float]) -> None:
        # plain Python floats (step_diagnostics' contract): the rows go into the checkpoint,
        # which loads with torch.load(weights_only=True)
        row = {"step": self.step, "epoch": self.epoch + 1, "loss": loss, **diagnostics}
        self.steps.append(row)
        if self.on_log_step is not None:
            self.on_log_step(row)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _shard_loss(outputs: torch.Tensor, targets: torch.Tensor, per: float) -> torch.Tensor:
    """A shard's cross-entropies summed, over the global batch's mean count per process."""
    return F.cross_entropy(outputs, targets, reduction="sum") / per


def _totals(world: World, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> torch.Tensor:
    """(loss sum, correct, seen) summed over every process, stacked in float64."""
    return world.sum_(torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(seen)]))


def _means(totals: torch.Tensor) -> tuple[float, float]:
    """(mean loss, accuracy) of stacked (loss sum, correct, seen) totals (float64)."""
    loss_sum, correct, seen = totals.tolist()
    return loss_sum / seen, correct / seen
