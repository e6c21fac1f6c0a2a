"""One run from its resolved config: check it, find its folder, build, resume, train, record.

``run(cfg)`` is what ``run.py`` calls inside the Hydra job (and what tests call in-process); it
reads as the run's whole story, the folder's life cycle being the store's
(``drsom.store.attempt.Attempt``) and the checkpoint fallback beside checkpoint saving
(``drsom.store.folder.RunDir.checkpoints``). A finished or diverged run is reported and skipped; any
other existing run continues from its checkpoint (the newest one that this run can continue from;
others are moved aside); a user's mistake raises one of ``USER_ERRORS``, whose message is one line:
a bad value, a missing dataset, a folder held by another process, a file the filesystem refuses
(full disk, read-only folder; the files keep their last complete versions and the summary says
"failed" and why). ``force=true`` clears the folder once per launch (``launch_identity``): a
requeued job resumes.

A run launched on several processes (``torchrun``, SLURM tasks: ``drsom.training.world``) is one
run: rank 0 does all of the above (lock, folder, checkpoints, summary, wandb) and tells the other
processes what it decided (already done; train from this checkpoint, or afresh; stop, and why),
which then train beside it and write nothing. The number of processes is part of the run's
identity (``trainer.processes``, 1 hashed as before): per-process BatchNorm statistics and random
streams make a 2-process run another computation, stored as another run; a config that fixes it
refuses a launch on another count.

Checkpoints are written every ``trainer.checkpoint_every`` epochs, at the end, and when the job's
preemption signal arrives (``drsom.job.preemption``): then after the current step, with the position
inside the epoch, after which the signal is handed back (submitit requeues the job, which resumes
here in the same folder).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from drsom.data import DataBundle, DatasetUnavailable
from drsom.job.bookkeeping import Bookkeeper, write_tables
from drsom.job.preemption import PreemptionGuard
from drsom.job.record import git_state, start_summary
from drsom.job.validate import (
    ConfigError,
    check_results_dir,
    resolve_device,
    settle_processes,
    validate,
)
from drsom.paths import shown
from drsom.store.attempt import Attempt
from drsom.store.folder import (
    CheckpointError,
    RunBusy,
    RunDir,
    StorageError,
)
from drsom.store.identity import complete, group_name
from drsom.store.state import metric_value
from drsom.training.build import build_trainer, data_parallel, load_data
from drsom.training.loop import METRIC_COLUMNS, STEP_COLUMNS, Trainer
from drsom.training.tracking import Tracker, new_wandb_id, tracking
from drsom.training.world import LeaderStopped, World, launched_size

log = logging.getLogger("drsom")

USER_ERRORS = (ConfigError, DatasetUnavailable, RunBusy, StorageError, LeaderStopped)

CHECKPOINT_FORMAT = 1


@dataclass
class Job:
    """What one process of the run carries from its config to its epochs."""

    c: dict[str, Any]  # the resolved config, completed (``_plain``)
    world: World
    device: torch.device
    base: Path  # relative paths of the config are taken from here
    prune: Callable[[int, float], bool] | None = None
    data: DataBundle | None = None  # read before the folder is touched
    preemption: PreemptionGuard | None = None  # while the run trains


def run(
    cfg: DictConfig | Mapping[str, Any],
    *,
    base_dir: str | Path | None = None,
    prune: Callable[[int, float], bool] | None = None,
) -> str:
    """Train (or resume, or skip) the run of ``cfg``; return its status.

    Relative paths in the config (``results_dir``, ``data.root``) are taken from ``base_dir``
    (``run.py`` passes the repository root; default: the current directory). ``prune`` (a tuning
    study's pruner, ``drsom.store.study.trial_pruner``) is told each evaluated epoch's validation
    accuracy and may stop the run there: its status is then ``pruned``, a result never resumed.
    """
    c = _plain(cfg)
    validate(c)
    device = resolve_device(c["trainer"]["device"])
    world = World.join(c["trainer"]["backend"], device.type)
    with _telling_errors(world):
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        job = Job(c, world, world.device(device), base, prune)
        # Every process checks what it can itself, in the same order (the same errors
        # everywhere); only what rank 0 alone sees (the folder's lock and contents) is told to
        # the others.
        settle_processes(c["trainer"], world.size, job.device)
        check_results_dir(c["results_dir"], base)  # before anything is read or made there
        attempt = Attempt(run_folder(c, base), c["force"], launch_identity())
        job.data = load_data(c, job.device, base, world)  # a missing dataset leaves no folder
        world.listening = True  # from here on only rank 0 can fail alone: it tells the others
        if not world.main:
            return _follow(job, attempt.run_dir)
        if (done := attempt.result(job.data.fingerprint, _commit)) is not None:
            return _told_done(world, done)
        _warn_amp_on_cpu(c, job.device)
        with (
            PreemptionGuard() as job.preemption,
            attempt.held(job.data.fingerprint, _commit) as done,
        ):
            if done is not None:  # finished by another process meanwhile
                return _told_done(world, done)
            attempt.begin()
            status = _train(job, attempt)
        return _ended(job, status)


@contextlib.contextmanager
def _telling_errors(world: World) -> Iterator[None]:
    """Rank 0's error told to the processes waiting for its word; the group left at the end."""
    if not world.main:
        log.setLevel(logging.WARNING)  # rank 0 says it all once
    try:
        yield
    except BaseException as exc:
        if world.main and world.listening and not world.told:  # the others wait: an error
            world.tell(("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        raise
    finally:
        world.leave()


def _told_done(world: World, status: str) -> str:
    world.tell(("done", status))
    return status


def _ended(job: Job, status: str) -> str:
    """After the epochs, on every process: no process leaves the group while another still talks
    in it; an interrupted run that the preemption signal stopped hands the signal back now
    (saved, recorded, wandb finished, folder unlocked: the scheduler may requeue it)."""
    job.world.barrier()
    if job.preemption.requested and status == "interrupted":
        job.preemption.hand_over()
    return status


def _warn_amp_on_cpu(c: dict, device: torch.device) -> None:
    if c["trainer"]["amp"] and device.type == "cpu":
        # Allowed (it is how the amp path is tried without a GPU), but never silently.
        log.warning(
            "trainer.amp=true on the CPU: bfloat16 autocast, usually slower than float32 there "
            "and less precise; a different run (id) from the float32 one"
        )


def _commit() -> str | None:
    return git_state()["git_commit"]


def _follow(job: Job, run_dir: RunDir) -> str:
    """A process above rank 0: train beside it as it says, writing nothing."""
    kind, value = job.world.hear()
    if kind == "error":
        raise LeaderStopped(f"rank 0 stopped before training: {value}")
    if kind == "done":
        return value
    with PreemptionGuard() as job.preemption:
        should_stop = lambda: job.preemption.requested  # noqa: E731
        trainer, _, _ = build_trainer(job.c, job.device, job.data, should_stop, job.world)
        if value is not None:  # the checkpoint rank 0 resumed from
            trainer.load_state_dict(run_dir.load_checkpoint(Path(value))["trainer"])
        data_parallel(trainer)
        book = Bookkeeper(run_dir, {}, trainer, {}, writes=False)
        status = _epochs(job, trainer, book, Tracker())
    return _ended(job, status)


# The scheduler's id of the job this process belongs to: it stays the same when the job is
# requeued (preemption, time limit) and is new for every submission.
JOB_ID_VARIABLES = (
    ("slurm", ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")),
    ("slurm", ("SLURM_JOB_ID",)),
    ("submitit-local", ("SUBMITIT_LOCAL_JOB_ID",)),
)


def launch_identity() -> str | None:
    """What names this launch of the run and is the same when its job is requeued; else None.

    A scheduler's job id (SLURM, submitit's local executor), with Hydra's output folder of the job
    when there is one: a requeued job runs the pickled config again, with the same output folder
    (its timestamp was resolved at launch), so it has the same identity; a new launch, or a second
    command in the same allocation, has a new one. Without a job id nothing requeues the process,
    and every launch counts as a new one.
    """
    job = None
    for kind, names in JOB_ID_VARIABLES:
        values = [os.environ.get(n) for n in names]
        if all(values):
            job = f"{kind} job {'_'.join(values)}"
            break
    if job is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        output_dir = HydraConfig.get().runtime.output_dir
        if output_dir:
            job = f"{job}, output {output_dir}"
    return job


def _train(job: Job, attempt: Attempt) -> str:
    """Rank 0's training, in its locked folder: from the newest checkpoint that fits (the other
    processes are told which), its tables, checkpoints and summary kept per epoch, mirrored to
    wandb."""
    c, world, run_dir = job.c, job.world, attempt.run_dir
    trainer, compiled, compile_note, checkpoint, path = _restore(job, run_dir)
    world.tell(("train", None if path is None else str(path)))
    data_parallel(trainer)
    if checkpoint is not None:
        wandb_id = _text(checkpoint.get("wandb_id")) or new_wandb_id()
        # The tables may hold rows past the checkpoint (checkpoint_every > 1, a fallback to the
        # previous checkpoint): they are redone, so they go now and the files match the state.
        write_tables(run_dir, trainer)
        log.info(f"run {run_dir.name}: resuming {_position(trainer)}")
    else:
        attempt.fresh_tables()  # rows of an attempt that saved no state
        wandb_id = _text(attempt.previous.get("wandb_id")) or new_wandb_id()
        log.info(f"run {run_dir.name}: new, {trainer.epochs} epochs")
    log.info(f"results: {run_dir.path}")

    summary = start_summary(
        c,
        attempt.previous,
        trainer,
        device=job.device,
        wandb_id=wandb_id,
        compiled=compiled,
        compile_note=compile_note,
        data_fingerprint=job.data.fingerprint,
        backend=world.backend,
    )
    attempt.started(summary, c, trainer.epoch if checkpoint is not None else None)
    log.info(_run_line(job, trainer, summary["device_name"], compiled))

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
        header = {"format": CHECKPOINT_FORMAT, "run_id": run_dir.name, "wandb_id": wandb_id}
        book = Bookkeeper(run_dir, summary, trainer, header)
        status = _epochs(job, trainer, book, tracker)
        tracker.final_values({k: v for k, v in summary.items() if not isinstance(v, dict | list)})
    return status


def _epochs(job: Job, trainer: Trainer, book: Bookkeeper, tracker: Tracker) -> str:
    """Per epoch: tables, checkpoint when due, summary, wandb, one log line; the pruner's word.

    Every process runs it; what decides where the epochs stop is the same on all of them."""
    c, world, preemption, prune = job.c, job.world, job.preemption, job.prune
    stop_after, done_here, pruned, preempted = c["trainer"]["stop_after_epochs"], 0, False, False
    run_dir, summary = book.run_dir, book.summary
    with book.ending(preemption) as ended:
        for row in trainer.run_epochs():
            done_here += 1
            last = trainer.epoch == trainer.epochs
            stopping = stop_after is not None and done_here >= stop_after and not last
            book.write_tables()
            # a signal during the epoch's end, on any process: every process acts on it
            preempted = world.any(preemption.requested, trainer.device) and not last
            due = trainer.epoch % c["trainer"]["checkpoint_every"] == 0
            book.epoch_end(checkpoint=last or stopping or preempted or due)
            tracker.log(row, step=row["step"])
            log.info(_epoch_line(row, trainer.epochs))
            if stopping or preempted:
                break
            val_acc = metric_value(row.get("val_acc"))
            if prune is not None and not last and val_acc is not None:
                pruned = world.decide(functools.partial(prune, trainer.epoch, val_acc))
                if pruned:
                    break
    if ended.status == "interrupted" or (not pruned and preempted):
        # the processes agreed to stop (the signal may have reached another one): each hands
        # it over, so that rank 0 requeues the job whichever task was signalled
        preemption.agree()
    if ended.status is not None:
        return ended.status

    status = "finished" if trainer.epoch >= trainer.epochs else "interrupted"
    status = "pruned" if pruned else status
    stopped = status == "interrupted" and preemption.requested
    extra = {"stopped_by": preemption.name} if stopped else {}
    book.close(status, **extra)
    if not world.main:
        return status
    if status == "finished":
        chosen = summary["selected"]
        at = f" (validation selects epoch {chosen['epoch']})" if chosen else ""
        log.info(
            f"run {run_dir.name} finished: test_acc {summary['final']['test_acc']:.4f}{at}, "
            f"{summary['total_seconds']:.0f} s"
        )
    elif pruned:
        log.info(
            f"run {run_dir.name} pruned after epoch {trainer.epoch}/{trainer.epochs} by the "
            f"study's pruner (val_acc {float(trainer.metrics[-1]['val_acc']):.4f})"
        )
    else:
        why = preemption.name if extra else "trainer.stop_after_epochs"
        log.info(
            f"run {run_dir.name} stopped after epoch {trainer.epoch}/{trainer.epochs} "
            f"({why}); rerun the same command to continue"
        )
    return status


def _position(trainer: Trainer) -> str:
    where = f"after epoch {trainer.epoch}/{trainer.epochs}"
    if trainer.partial:
        done, total = trainer.partial["batches"], len(trainer.data.train)
        where = f"in epoch {trainer.epoch + 1}/{trainer.epochs} after batch {done}/{total}"
    return f"{where} (step {trainer.step})"


Restored = tuple[Trainer, bool, str | None, dict | None, Path | None]


def _restore(job: Job, run_dir: RunDir) -> Restored:
    """A trainer at the newest checkpoint that this run can continue from, else a fresh one.

    A checkpoint that cannot be read, or that is readable but does not fit this run (another
    run's, another optimizer's or model's: its state does not load), is reported and set aside
    (``RunDir.checkpoints``), so that a rerun does not fail on it again. A trainer a checkpoint
    failed to load into may be half-loaded: the next one is built afresh. Returns the trainer,
    whether it is compiled and why not, the checkpoint's state and its path (None and None: from
    scratch).
    """
    should_stop = lambda: job.preemption.requested  # noqa: E731
    build = functools.partial(build_trainer, job.c, job.device, job.data, should_stop, job.world)
    for path, state in run_dir.checkpoints():
        trainer, compiled, note = build()
        try:
            trainer.load_state_dict(state["trainer"])
        except Exception as exc:
            run_dir.set_aside(
                path,
                CheckpointError(
                    f"checkpoint {shown(path)} does not fit this run (another optimizer or "
                    f"model?): {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                ),
            )
            continue
        if run_dir.aside:
            log.warning(f"resuming from the previous checkpoint {path} (epoch {trainer.epoch})")
        return trainer, compiled, note, state, path
    if run_dir.aside:
        log.warning(f"no readable checkpoint left in {run_dir.path}: starting from scratch")
    return (*build(), None, None)


def _run_line(job: Job, trainer: Trainer, device_name: str, compiled: bool) -> str:
    """What trains: optimizer, model, data, steps, processes, device, amp, compilation."""
    c, data = job.c, job.data
    millions = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    return (
        f"{c['optimizer']['label']} | {c['model']['name']} ({millions:.2f}M parameters) | "
        f"{c['data']['name']}: {data.num_train} train / {data.num_val} val / {data.num_test} test, "
        f"{len(data.train)} steps per epoch{_processes(job.world)} | {job.device} "
        f"({device_name}), "
        f"amp {'on' if trainer.autocast else 'off'}, compiled {'yes' if compiled else 'no'}"
    )


def _processes(world: World) -> str:
    if world.size == 1:
        return ""
    return f" (global batches: {world.size} processes, {world.backend})"


def _text(value: Any) -> str | None:
    """``value`` if it is a non-empty string (ids read back from files written by others)."""
    return value if isinstance(value, str) and value else None


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c.pop("hydra", None)
    return complete(c)  # the names a config may leave out, filled in as the run records them


def run_folder(cfg: DictConfig | Mapping[str, Any], base_dir: str | Path | None = None) -> RunDir:
    """Where the run of ``cfg`` is stored (``<results_dir>/<run_id>``, relative to base_dir).

    ``trainer.processes`` left null is what this process's launch has (torchrun, SLURM tasks),
    as the run fills it in."""
    c = _plain(cfg)
    if c["trainer"]["processes"] is None:
        c["trainer"]["processes"] = launched_size()
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return RunDir.of(c, base)


# -------------------------------------------------------------------------------- display
def _epoch_line(row: dict, epochs: int) -> str:
    """The epoch's log line: losses, accuracies, lr, the optimizer's diagnostics, seconds."""
    parts = [
        f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
        f"running train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}",
    ]
    for split in ("train_eval", "val", "test"):
        if row[f"{split}_acc"] == row[f"{split}_acc"]:  # NaN: not evaluated (this epoch)
            shown = "train" if split == "train_eval" else split
            parts.append(f"{shown} {row[f'{split}_loss']:.4f} acc {row[f'{split}_acc']:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    # the optimizer's epoch means (Trainer.metric_columns), whatever its keys are
    own = [(k.removesuffix("_mean"), v) for k, v in row.items() if k not in METRIC_COLUMNS]
    means = [f"{k} {v:.3g}" for k, v in own]
    if means:
        parts.append("mean " + " ".join(means))
    parts.append(f"{row['train_seconds']:.1f}s train / {row['total_seconds']:.1f}s total")
    return "  ".join(parts)


def _step_log(row: dict) -> dict[str, Any]:
    """A steps.csv row for wandb: the loop's columns as ``step/<key>``, the optimizer's
    diagnostics as ``opt/<key>`` (wandb's own step is the row's step)."""
    return {
        f"step/{k}" if k in STEP_COLUMNS else f"opt/{k}": v for k, v in row.items() if k != "step"
    }
