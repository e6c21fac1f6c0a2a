"""One run from its resolved config: check it, find its folder, build, resume, train, record.

``run(cfg)`` is what ``run.py`` calls inside the Hydra job (and what tests call in-process). A
finished or diverged run is reported and skipped; any other existing run continues from its
checkpoint (the newest readable one); a user's mistake raises one of ``USER_ERRORS``, whose message
is one line.

Checkpoints are written every ``trainer.checkpoint_every`` epochs, at the end, and when the job's
preemption signal arrives (``drsom.preemption``): then after the current step, with the position
inside the epoch, after which the signal is handed back (submitit requeues the job, which resumes
here in the same folder).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from drsom.config import ConfigError, optimizer_kwargs, resolve_device, validate
from drsom.data import DataBundle, DatasetUnavailable, build_data
from drsom.models import build_model
from drsom.optim import build, step_protocol
from drsom.preemption import PreemptionGuard
from drsom.schedules import build_scheduler
from drsom.store import TERMINAL_STATUSES, CheckpointError, RunBusy, RunDir, group_name, run_id
from drsom.summary import record, start_summary
from drsom.tracking import Tracker, new_wandb_id, tracking
from drsom.train import METRIC_COLUMNS, STEP_COLUMNS, Diverged, Paused, Trainer

log = logging.getLogger("drsom")

USER_ERRORS = (ConfigError, DatasetUnavailable, RunBusy)

CHECKPOINT_FORMAT = 1


def run(cfg: DictConfig | Mapping[str, Any], *, base_dir: str | Path | None = None) -> str:
    """Train (or resume, or skip) the run of ``cfg``; return its status.

    Relative paths in the config (``results_dir``, ``data.root``) are taken from ``base_dir``
    (``run.py`` passes the repository root; default: the current directory).
    """
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c.pop("hydra", None)
    validate(c)
    device = resolve_device(c["trainer"]["device"])
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    run_dir = RunDir(_absolute(base, c["results_dir"]) / run_id(c))
    if _already_done(run_dir, c["force"]):
        return run_dir.read_summary()["status"]
    data = _load_data(c, device, base)  # before the folder exists: a missing dataset leaves none
    with PreemptionGuard() as preemption, run_dir.locked():
        if _already_done(run_dir, c["force"]):  # finished by another process meanwhile
            return run_dir.read_summary()["status"]
        status = _train(c, run_dir, device, data, preemption)
    if preemption.requested and status == "interrupted":
        # Saved, recorded, wandb finished, folder unlocked: now let the signal do its work.
        preemption.hand_over()
    return status


def _already_done(run_dir: RunDir, force: bool) -> bool:
    summary = run_dir.read_summary()
    if force or not summary or summary.get("status") not in TERMINAL_STATUSES:
        return False
    if summary["status"] == "diverged":
        what = f"in epoch {summary.get('diverged_epoch')}"
    else:
        what = f"test_acc {summary['final']['test_acc']:.4f} after epoch {summary['epoch']}"
    log.info(
        f"run {run_dir.name} already {summary['status']} ({what}) in {run_dir.path}; "
        "force=true runs it again"
    )
    return True


def _train(
    c: dict, run_dir: RunDir, device: torch.device, data: DataBundle, preemption: PreemptionGuard
) -> str:
    t = c["trainer"]
    run_dir.remove_temporaries()  # of writes cut short by a kill; we hold the lock
    if c["force"]:
        run_dir.clear()
    seed_everything(c["seed"])
    model, optimizer, scheduler = build_training(c, device)
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
        should_stop=lambda: preemption.requested,
    )

    previous = run_dir.read_summary() or {}
    checkpoint = _load_checkpoint(run_dir)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        wandb_id = checkpoint["wandb_id"]
        # The tables may hold rows past the checkpoint (checkpoint_every > 1, a fallback to the
        # previous checkpoint): they are redone, so they go now and the files match the state.
        _write_tables(run_dir, trainer)
        log.info(f"run {run_dir.name}: resuming {_position(trainer)}")
    else:
        for path in (run_dir.metrics, run_dir.steps):  # rows of an attempt that saved no state
            path.unlink(missing_ok=True)
        wandb_id = previous.get("wandb_id") or new_wandb_id()
        log.info(f"run {run_dir.name}: new, {trainer.epochs} epochs")
    log.info(f"results: {run_dir.path}")

    summary = start_summary(
        c,
        previous,
        trainer,
        device=device,
        wandb_id=wandb_id,
        compiled=compiled,
        compile_note=compile_note,
    )
    run_dir.write_config(c)
    run_dir.write_summary(summary)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    log.info(
        f"{c['optimizer']['label']} | {c['model']['name']} ({millions:.2f}M parameters) | "
        f"{c['data']['name']}: {data.num_train} train / {data.num_test} test, "
        f"{len(data.train)} steps per epoch | {device} ({summary['device_name']}), "
        f"amp {'on' if amp else 'off'}, compiled {'yes' if compiled else 'no'}"
    )

    tags = [c["data"]["name"], c["model"]["name"], c["optimizer"]["label"], c["experiment"]]
    with tracking(
        c["logger"],
        run_id=run_dir.name,
        wandb_id=wandb_id,
        group=group_name(c),
        tags=tags,
        config={**c, "run_id": run_dir.name, "compiled": compiled},
        run_dir=run_dir.path,
    ) as tracker:
        trainer.on_log_step = lambda row: tracker.log(_step_log(row), step=row["step"])
        status = _epochs(c, trainer, run_dir, summary, tracker, wandb_id, preemption)
        tracker.summary({k: v for k, v in summary.items() if not isinstance(v, dict | list)})
    return status


def _epochs(
    c: dict,
    trainer: Trainer,
    run_dir: RunDir,
    summary: dict,
    tracker: Tracker,
    wandb_id: str,
    preemption: PreemptionGuard,
) -> str:
    """Per epoch: tables, checkpoint when due, summary, wandb, one log line."""
    stop_after, done_here = c["trainer"]["stop_after_epochs"], 0
    checkpoint = {"format": CHECKPOINT_FORMAT, "run_id": run_dir.name, "wandb_id": wandb_id}
    try:
        for row in trainer.run_epochs():
            done_here += 1
            last = trainer.epoch == trainer.epochs
            stopping = stop_after is not None and done_here >= stop_after and not last
            _write_tables(run_dir, trainer)
            preempted = preemption.requested and not last  # a signal during the epoch's end
            due = trainer.epoch % c["trainer"]["checkpoint_every"] == 0
            if last or stopping or preempted or due:
                run_dir.save_checkpoint({**checkpoint, "trainer": trainer.state_dict()})
            record(summary, trainer, "running")
            run_dir.write_summary(summary)
            tracker.log(row, step=row["step"])
            log.info(_epoch_line(row, trainer.epochs))
            if stopping or preempted:
                break
    except Paused as exc:  # preempted inside an epoch: save the position, resume there
        _write_tables(run_dir, trainer)
        run_dir.save_checkpoint({**checkpoint, "trainer": trainer.state_dict()})
        record(summary, trainer, "interrupted", stopped_by=preemption.name)
        run_dir.write_summary(summary)
        log.info(
            f"run {run_dir.name} {exc} (step {trainer.step}) on {preemption.name}: checkpoint "
            f"saved in {run_dir.checkpoint}; the same command (or the requeued job) resumes there"
        )
        return "interrupted"
    except Diverged as exc:
        record(summary, trainer, "diverged", diverged_epoch=exc.epoch, diverged_step=exc.step)
        run_dir.write_summary(summary)
        log.warning(f"run {run_dir.name} diverged: {exc}; recorded in {run_dir.summary}")
        return "diverged"
    except (KeyboardInterrupt, SystemExit):  # SystemExit: a launcher's handler ending the job
        record(summary, trainer, "interrupted")
        run_dir.write_summary(summary)
        raise
    except Exception as exc:
        record(summary, trainer, "failed", error=f"{type(exc).__name__}: {exc}")
        run_dir.write_summary(summary)
        raise

    status = "finished" if trainer.epoch >= trainer.epochs else "interrupted"
    extra = {"stopped_by": preemption.name} if status != "finished" and preemption.requested else {}
    record(summary, trainer, status, **extra)
    run_dir.write_summary(summary)
    if status == "finished":
        log.info(
            f"run {run_dir.name} finished: test_acc {summary['final']['test_acc']:.4f} "
            f"(best {summary['best_test_acc']:.4f} after epoch {summary['best_epoch']}), "
            f"{summary['total_seconds']:.0f} s"
        )
    else:
        why = preemption.name if extra else "trainer.stop_after_epochs"
        log.info(
            f"run {run_dir.name} stopped after epoch {trainer.epoch}/{trainer.epochs} "
            f"({why}); rerun the same command to continue"
        )
    return status


def _write_tables(run_dir: RunDir, trainer: Trainer) -> None:
    run_dir.write_table("metrics", METRIC_COLUMNS, trainer.metrics)
    if trainer.steps:
        run_dir.write_table("steps", STEP_COLUMNS, trainer.steps)
    else:
        run_dir.steps.unlink(missing_ok=True)


def _position(trainer: Trainer) -> str:
    where = f"after epoch {trainer.epoch}/{trainer.epochs}"
    if trainer.partial:
        done, total = trainer.partial["batches"], len(trainer.data.train)
        where = f"in epoch {trainer.epoch + 1}/{trainer.epochs} after batch {done}/{total}"
    return f"{where} (step {trainer.step})"


# ------------------------------------------------------------------------------- building
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def build_training(c: dict, device: torch.device):
    """Model on its device and memory format first: DRSOM packs the parameters where they are."""
    t, opt = c["trainer"], c["optimizer"]
    model = build_model(c["model"]["name"], c["data"]["num_classes"]).to(device)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build(opt["name"], model.parameters(), **optimizer_kwargs(opt))
    return model, optimizer, build_scheduler(t, optimizer)


def _load_data(c: dict, device: torch.device, base: Path) -> DataBundle:
    d, t = c["data"], c["trainer"]
    try:
        data = build_data(
            d["name"],
            root=_absolute(base, d["root"]),
            download=d["download"],
            verify=d["verify"],
            train_subset=d["train_subset"],
            augment=d["augment"],
            batch_size=t["batch_size"],
            test_batch_size=t["test_batch_size"],
            device=device,
            seed=c["seed"],
            num_workers=d["num_workers"],
            channels_last=t["channels_last"],
        )
    except ValueError as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    if data.num_classes != d["num_classes"]:
        raise ConfigError(
            f"data.num_classes={d['num_classes']} but {d['name']} has {data.num_classes} classes"
        )
    return data


def maybe_compile(model: torch.nn.Module, optimizer: torch.optim.Optimizer, wanted: bool):
    """(module to run, whether it is compiled, why not when compiling was asked for)."""
    if not wanted:
        return model, False, None
    if step_protocol(optimizer) == "create_graph" or getattr(optimizer, "hessian", None) == "hvp":
        note = (
            "trainer.compile ignored: this optimizer needs double backward (exact Hessian-"
            "vector products), which torch.compile cannot run; training eagerly"
        )
        log.warning(note)
        return model, False, note
    return torch.compile(model), True, None


def _load_checkpoint(run_dir: RunDir) -> dict | None:
    """The newest readable checkpoint; an unreadable one is reported and moved aside."""
    bad = []
    for path in (run_dir.checkpoint, run_dir.previous_checkpoint):
        try:
            state = run_dir.load_checkpoint(path)
        except CheckpointError as exc:
            aside = path.with_name(path.name.replace(".pt", ".corrupt.pt"))
            path.replace(aside)  # kept for a post-mortem; never read again
            log.warning(f"{exc}; moved to {aside.name}")
            bad.append(path.name)
            continue
        if state is None:
            continue
        if bad:
            epoch = state["trainer"]["epoch"]
            log.warning(f"resuming from the previous checkpoint {path} (epoch {epoch})")
        return state
    if bad:
        log.warning(f"no readable checkpoint left in {run_dir.path}: starting from scratch")
    return None


def _absolute(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


# -------------------------------------------------------------------------------- display
def _epoch_line(row: dict, epochs: int) -> str:
    parts = [
        f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}",
    ]
    if row["test_acc"] == row["test_acc"]:  # NaN: not evaluated this epoch
        parts.append(f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    if row.get("radius") is not None:
        parts.append(f"radius {row['radius']:.3g} accepted {row['accept_rate']:.0%}")
    parts.append(f"{row['train_seconds']:.1f}s train / {row['total_seconds']:.1f}s total")
    return "  ".join(parts)


def _step_log(row: dict) -> dict[str, Any]:
    out = {f"drsom/{k}": v for k, v in row.items() if k not in ("step", "alpha")}
    out.update({f"drsom/alpha_{i}": a for i, a in enumerate(row["alpha"])})
    return out
