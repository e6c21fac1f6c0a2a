"""Checks of a run's configuration, done before any data, folder or device is touched.

Every problem a user can cause with a value ends here as a ``ConfigError`` whose message is one
line naming the key, the value and what is accepted; ``run.py`` prints it and exits non-zero.
A key the run does not read is refused too (``+trainer.epoch=3`` would otherwise run, do nothing
and still make a new run id): the top level and ``trainer`` and ``logger`` have the keys below;
the optimizer, model and data groups take their meta keys and their target's arguments
(:mod:`drsom.cfg.targets`). Unknown config options (``optimizer=nadm``) are Hydra's to report.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from drsom.cfg import checks
from drsom.cfg.checks import ConfigError
from drsom.cfg.schedules import LR_SCHEDULES, milestone_epochs
from drsom.cfg.targets import TargetError
from drsom.data import check_data, validation_count
from drsom.models import check_model
from drsom.optim import optimizer_factory
from drsom.paths import shown
from drsom.training.tracking import WANDB_MODES
from drsom.training.world import BACKENDS

DEVICES = ("auto", "cpu", "cuda", "cuda:N")

# What a run reads, per group whose keys the suite defines (configs/config.yaml, trainer/default,
# logger/wandb); the optimizer, model and data groups are checked against their targets.
TOP_KEYS = ("model", "optimizer", "data", "trainer", "logger", "seed", "experiment")
TOP_KEYS += ("results_dir", "force")
# Keys an experiment file may add for the analysis, which the run never reads (``study.reuse``:
# drsom.analysis.runs.experiment_runs).
OPTIONAL_TOP_KEYS = ("study",)
TRAINER_KEYS = (
    *("epochs", "batch_size", "test_batch_size", "device", "lr_schedule", "lr_milestones"),
    *("lr_gamma", "eval_every", "log_every_steps", "checkpoint_every", "amp", "compile"),
    *("channels_last", "progress", "stop_after_epochs", "bn_debias"),
    *("processes", "backend", "sync_batchnorm"),
)
LOGGER_KEYS = ("mode", "project", "entity", "group", "tags", "init_timeout")

# NumPy's global generator takes seeds in [0, 2**32); Python's and torch's take more.
MAX_SEED = 2**32 - 1

# The label is part of the run id, a folder name: letters, digits and . _ + = - only, starting with
# a letter or digit (no "/", no "..", no hidden folder), and short enough for any filesystem.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,99}")
# Data and model names are parts of the run id that is split at hyphens: no hyphen in them.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=]{0,99}")


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first invalid value of the resolved config ``cfg`` (with its
    names filled in: ``drsom.store.identity.complete``)."""
    _known_keys("", cfg, TOP_KEYS, optional=OPTIONAL_TOP_KEYS)
    _known_keys("trainer.", cfg["trainer"], TRAINER_KEYS)
    _known_keys("logger.", cfg["logger"], LOGGER_KEYS)
    t, d = cfg["trainer"], cfg["data"]
    _integer("trainer.epochs", t["epochs"], low=1)
    _integer("trainer.batch_size", t["batch_size"], low=1)
    _integer("trainer.test_batch_size", t["test_batch_size"], low=1)
    _integer("trainer.eval_every", t["eval_every"], low=1)
    _integer("trainer.checkpoint_every", t["checkpoint_every"], low=1)
    _integer("trainer.log_every_steps", t["log_every_steps"], low=0)
    if t["stop_after_epochs"] is not None:
        _integer("trainer.stop_after_epochs", t["stop_after_epochs"], low=1)
    _choice("trainer.lr_schedule", t["lr_schedule"], LR_SCHEDULES)
    if t["lr_schedule"] == "step":
        try:
            milestone_epochs(t["lr_milestones"], t["epochs"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    _number("trainer.lr_gamma", t["lr_gamma"], low=0.0, strict=True)
    if t["processes"] is not None:
        _integer("trainer.processes", t["processes"], low=1)
        check_processes(t, t["processes"])
    _choice("trainer.backend", t["backend"], BACKENDS)
    for key in ("amp", "compile", "channels_last", "progress", "bn_debias", "sync_batchnorm"):
        _boolean(f"trainer.{key}", t[key])
    _boolean("force", cfg["force"])
    _integer("seed", cfg["seed"], low=0, high=MAX_SEED)
    resolve_device(t["device"])
    _check_logger_mode(cfg["logger"].get("mode"))

    _name("model.name", cfg["model"]["name"], NAME_PATTERN, "no hyphen")
    _name("data.name", d["name"], NAME_PATTERN, "no hyphen")
    _name("optimizer.label", cfg["optimizer"]["label"], LABEL_PATTERN, "- allowed")
    if d["train_subset"] is not None:
        _integer("data.train_subset", d["train_subset"], low=1)
    try:  # its type here; against the training split's size once the data is read
        validation_count(d["val_size"], sys.maxsize)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _integer("data.num_workers", d["num_workers"], low=0)
    _boolean("data.augment", d["augment"])
    try:
        check_model(cfg["model"])
        check_data(d)
        # Building on a stand-in parameter runs every check of the optimizer's constructor now,
        # instead of after the dataset has been loaded (or downloaded).
        optimizer_factory(cfg["optimizer"])([torch.zeros(2, requires_grad=True)])
    except TargetError as exc:
        raise ConfigError(str(exc)) from None


def check_processes(t: Mapping[str, Any], processes: int) -> None:
    """The trainer's options that a run on ``processes`` processes cannot serve, in one line."""
    if t["batch_size"] % processes:
        raise ConfigError(
            f"trainer.batch_size={t['batch_size']} does not split over {processes} processes "
            "(the global batch is shared equally); choose a multiple"
        )


def settle_processes(t: dict[str, Any], world_size: int, device: torch.device) -> None:
    """``trainer.processes`` as launched (null: filled in); a launch on another count refused."""
    wanted = t["processes"]
    if wanted is not None and wanted != world_size:
        raise ConfigError(
            f"trainer.processes={wanted}, but this run was launched on {world_size} "
            f"process{'es' if world_size > 1 else ''}: a run on another number of processes "
            "is another run (its BatchNorm statistics and random streams differ); launch it on "
            f"{wanted}, or set trainer.processes={world_size} (or null)"
        )
    t["processes"] = world_size
    check_processes(t, world_size)
    if world_size > 1 and t["sync_batchnorm"] and device.type != "cuda":
        raise ConfigError(
            "trainer.sync_batchnorm=true: torch's SyncBatchNorm runs on CUDA devices only; on "
            "CPUs each process normalises by its own shard's statistics (docs/cluster.md)"
        )


def check_results_dir(value: Any, base: Path) -> Path:
    """The folder runs are stored in (``results_dir``, relative to ``base``), or ConfigError
    (one line) before anything is made: empty (it would be the current folder, e.g. the
    repository root), a file, below a file, or a loop of symbolic links."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"results_dir={value!r} is not a folder name; accepted: the folder the run folders "
            "go in, e.g. results_dir=results/runs"
        )
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        path.resolve(strict=False)  # a loop of symbolic links ends here (RuntimeError/OSError)
        node = path
        while not node.exists() and not node.is_symlink() and node != node.parent:
            node = node.parent
        node.stat()
    except (RuntimeError, OSError) as exc:
        # pathlib's RuntimeError (before Python 3.13) is a loop; its message is the path the
        # resolver had expanded when it gave up, longer with every link it followed: said in words
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "a loop of symbolic links"
        raise ConfigError(f"results_dir={shown(value)} cannot be used as a folder: {why}") from None
    if not node.is_dir():
        where = "is a file" if node == path else f"lies below the file {shown(node)}"
        raise ConfigError(
            f"results_dir={shown(value)} {where}; accepted: a folder, or a path where one can be "
            "made"
        )
    return path


def _known_keys(
    prefix: str, node: Mapping[str, Any], known: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    unknown = sorted(set(node) - set(known) - set(optional))
    if unknown:
        accepted = ", ".join(known + optional)
        raise ConfigError(
            f"{prefix}{unknown[0]} is not a key the run reads; accepted keys: {accepted}"
        )
    missing = [k for k in known if k not in node]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]} is missing from the config")


def _name(key: str, value: Any, pattern: re.Pattern, hyphen: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(
            f"{key}={value!r} is not a file-name part (it names the run's folder): use letters, "
            f"digits and . _ + = ({hyphen}; at most 100, starting with a letter or digit)"
        )


def _check_logger_mode(mode: Any) -> None:
    if mode in WANDB_MODES:
        return
    # logger.mode defaults to $WANDB_MODE: when that is where the value came from, say so.
    from_env = os.environ.get("WANDB_MODE") == mode
    source = " (from the WANDB_MODE environment variable)" if from_env else ""
    raise ConfigError(f"logger.mode={mode!r}{source} is not one of {', '.join(WANDB_MODES)}")


def resolve_device(spec: Any) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` asked for without one -> ConfigError."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ConfigError(f"trainer.device={spec!r} is not one of {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={spec} but no CUDA device is available "
            f"(torch {torch.__version__}, cuda {torch.version.cuda}); "
            "use trainer.device=cpu or trainer.device=auto"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"trainer.device={spec} but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


# The shared checks (drsom.cfg.checks), each line naming the key, raised as ConfigError.
_integer = functools.partial(checks.integer, error=ConfigError)
_boolean = functools.partial(checks.boolean, error=ConfigError)
_choice = functools.partial(checks.one_of, error=ConfigError, quoted=False)


def _number(key: str, value: Any, low: float, strict: bool = False) -> None:
    relation = ">" if strict else ">="

    def ok(v: float) -> bool:
        return math.isfinite(v) and (v > low if strict else v >= low)

    checks.real(key, value, f"a number {relation} {low:g}", ok, error=ConfigError)
