"""A run's construction from its checked config: seed, data, model, optimizer, schedule, compile.

The order is part of the result: the seed first, then the model on its device and memory format
(DRSOM packs the parameters where they are), then the optimizer and its schedule. A value the
config boundary could not check before building (a model that rejects the dataset's shape, a
dataset that is not there) is a ``ConfigError`` in one line.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from drsom.cfg.checks import ConfigError
from drsom.cfg.targets import TargetError
from drsom.data import DataBundle, build_data, load_dataset
from drsom.models import build_model
from drsom.optim import needs_double_backward, optimizer_factory
from drsom.training.batchnorm import debias_batchnorm
from drsom.training.loop import Trainer
from drsom.training.schedules import build_scheduler

log = logging.getLogger("drsom")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def load_data(c: dict, device: torch.device, base: Path) -> DataBundle:
    """The run's data (``data.root`` relative to ``base``), split and batched for ``device``."""
    d, t = c["data"], c["trainer"]
    try:
        return build_data(
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
        )
    except ValueError as exc:  # TargetError included
        raise ConfigError(" ".join(str(exc).split())) from None


def build_training(c: dict, device: torch.device, data: DataBundle):
    """Model on its device and memory format first: DRSOM packs the parameters where they are."""
    t = c["trainer"]
    try:
        model = build_model(c["model"], data.num_classes, data.input_shape).to(device)
        if t["bn_debias"]:
            debias_batchnorm(model)
        if t["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        optimizer = optimizer_factory(c["optimizer"])(model.parameters())
    except TargetError as exc:
        raise ConfigError(str(exc)) from None
    return model, optimizer, build_scheduler(t, optimizer)


def build_trainer(
    c: dict, device: torch.device, data: DataBundle, should_stop=None
) -> tuple[Trainer, bool, str | None]:
    """A fresh trainer of the run, from its seed: (trainer, compiled, why not compiled)."""
    t = c["trainer"]
    seed_everything(c["seed"])
    model, optimizer, scheduler = build_training(c, device, data)
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
