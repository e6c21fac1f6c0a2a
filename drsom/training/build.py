"""A run's construction from its checked config: seed, data, model, optimizer, schedule, compile.

The order is part of the result: the seed first, then the model on its device and memory format
(DRSOM packs the parameters where they are), then the optimizer and its schedule. A value the
config boundary could not check before building (a model that rejects the dataset's shape, a
dataset that is not there) is a ``ConfigError`` in one line.

Data-parallel (``World`` of several processes): an optimizer that takes ``reduce`` (DRSOM) gets
``mean_over()`` and steps the bare module, so its trial forwards never run DDP's reducer or buffer
broadcast; a first-order optimizer steps ``DistributedDataParallel`` around the module (its
gradients averaged in the backward, overlapped with it); any other optimizer is refused, because
what it reads besides the gradient (a second backward, a closure's losses) would be each process's
own.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drsom.cfg.checks import ConfigError
from drsom.cfg.schedules import milestone_epochs
from drsom.cfg.targets import TargetError, keywords
from drsom.data import DataBundle, build_data, load_dataset
from drsom.models import build_model
from drsom.optim import needs_double_backward, optimizer_factory
from drsom.optim.distributed import mean_over
from drsom.optim.protocol import STEP_BACKWARD, step_protocol
from drsom.training.batchnorm import debias_batchnorm
from drsom.training.loop import Trainer
from drsom.training.world import World

log = logging.getLogger("drsom")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def load_data(c: dict, device: torch.device, base: Path, world: World | None = None) -> DataBundle:
    """The run's data (``data.root`` relative to ``base``), split and batched for ``device``;
    this process's shard of every batch (``world``)."""
    d, t = c["data"], c["trainer"]
    world = World() if world is None else world
    try:
        data = build_data(
            load_dataset(d, base),
            train_subset=d["train_subset"],
            val_size=d["val_size"],
            augment=d["augment"],
            batch_size=t["batch_size"],
            test_batch_size=t["test_batch_size"],
            device=device,
            seed=c["seed"],
            num_workers=d["num_workers"],
            channels_last=t["channels_last"],
            shard=(world.rank, world.size),
        )
    except ValueError as exc:  # TargetError included
        raise ConfigError(" ".join(str(exc).split())) from None
    last = data.num_train % t["batch_size"]
    if 0 < last < world.size:
        raise ConfigError(
            f"the last batch of an epoch has {last} images ({data.num_train} training images in "
            f"batches of {t['batch_size']}): fewer than the {world.size} processes; change "
            "trainer.batch_size or data.train_subset"
        )
    return data


def build_training(c: dict, device: torch.device, data: DataBundle, world: World | None = None):
    """Model on its device and memory format first: DRSOM packs the parameters where they are."""
    t = c["trainer"]
    world = World() if world is None else world
    try:
        model = build_model(c["model"], data.num_classes, data.input_shape).to(device)
        if t["bn_debias"]:
            debias_batchnorm(model)
        if world.size > 1 and t["sync_batchnorm"]:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if t["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        factory = optimizer_factory(c["optimizer"])
        runtime = {"reduce": mean_over()} if world.size > 1 and factory.reduces else {}
        optimizer = factory(model.parameters(), **runtime)
    except TargetError as exc:
        raise ConfigError(str(exc)) from None
    if world.size > 1 and t["sync_batchnorm"] and needs_double_backward(optimizer):
        raise ConfigError(
            f"trainer.sync_batchnorm=true with {type(optimizer).__name__}, which differentiates "
            "its gradient again: torch's SyncBatchNorm has no double backward"
        )
    return model, optimizer, build_scheduler(t, optimizer)


def _reduces_itself(optimizer) -> bool:
    return "reduce" in keywords(type(optimizer))[0]  # given mean_over() in build_training


def check_data_parallel(optimizer, world: World) -> None:
    """Refuse, in one line, an optimizer that a run on several processes cannot keep in step."""
    if world.size == 1 or _reduces_itself(optimizer):
        return
    if step_protocol(optimizer) != STEP_BACKWARD:
        what = (
            "differentiates its gradient again (create_graph), which DistributedDataParallel "
            "does not average"
            if needs_double_backward(optimizer)
            else "decides from the losses of its own closure calls, which would be each "
            "process's own"
        )
        raise ConfigError(
            f"optimizer {type(optimizer).__name__} {what}: a run on {world.size} processes takes "
            "DRSOM or a first-order optimizer"
        )


def data_parallel(trainer: Trainer) -> None:
    """Wrap the trainer's module in DDP for a first-order optimizer on several processes.

    Apart from ``build_trainer``: DDP's construction is a collective (it broadcasts rank 0's
    parameters), so every process calls this once it holds the run's state (afresh or restored).
    """
    if trainer.world.size == 1 or _reduces_itself(trainer.optimizer):
        return
    device = trainer.device
    device_ids = [device.index] if device.type == "cuda" else None
    trainer.train_net = torch.nn.parallel.DistributedDataParallel(
        trainer.net, device_ids=device_ids
    )


def build_trainer(
    c: dict, device: torch.device, data: DataBundle, should_stop=None, world: World | None = None
) -> tuple[Trainer, bool, str | None]:
    """A fresh trainer of the run, from its seed: (trainer, compiled, why not compiled)."""
    t = c["trainer"]
    world = World() if world is None else world
    seed_everything(c["seed"])  # the same on every process: the same initial model
    model, optimizer, scheduler = build_training(c, device, data, world)
    check_data_parallel(optimizer, world)
    net, compiled, compile_note = maybe_compile(model, optimizer, t["compile"])
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if t["amp"] else None
    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        data,
        epochs=t["epochs"],
        eval_every=t["eval_every"],
        log_every_steps=t["log_every_steps"],
        net=net,
        autocast=amp,
        progress=t["progress"],
        should_stop=should_stop,
        world=world,
    )
    return trainer, compiled, compile_note


def maybe_compile(model: torch.nn.Module, optimizer: torch.optim.Optimizer, wanted: bool):
    """(module to run, whether it is compiled, why not when compiling was asked for)."""
    if not wanted:
        return model, False, None
    if needs_double_backward(optimizer):
        note = (
            "trainer.compile ignored: this optimizer needs double backward (it differentiates "
            "a gradient again), which torch.compile cannot run; training eagerly"
        )
        log.warning(note)
        return model, False, note
    return torch.compile(model), True, None


def build_scheduler(trainer: Mapping[str, Any], optimizer: torch.optim.Optimizer):
    """The per-epoch scheduler of ``trainer.lr_schedule`` (None for a constant lr)."""
    lr_scheduler = torch.optim.lr_scheduler
    if trainer["lr_schedule"] == "step":
        epochs = milestone_epochs(trainer["lr_milestones"], trainer["epochs"], warn=True)
        return lr_scheduler.MultiStepLR(optimizer, epochs, trainer["lr_gamma"])
    if trainer["lr_schedule"] == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=trainer["epochs"])
    return None
