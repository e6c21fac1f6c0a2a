"""A run's status and summary kept true while it trains: ``Bookkeeper``.

Each epoch's end writes the tables, the checkpoint when one is due and the summary ("running");
``ending()`` records how the epochs stopped, whatever stopped them:

==================================== =========================== ==============================
what ended the epochs                summary status              then
==================================== =========================== ==============================
the preemption signal, mid-epoch     interrupted (stopped_by)    position saved, returns
(``Paused``)
a non-finite loss (``Diverged``)     diverged (epoch, step)      returns
Ctrl-C, a launcher's ``SystemExit``  interrupted                 raised again
a refused write (full disk, ...)     failed (why, last good      raised as one ``StorageError``
                                     checkpoint)                 line
any other exception                  failed (``Type: message``)  raised again
==================================== =========================== ==============================
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drsom.job.preemption import PreemptionGuard
from drsom.job.record import record
from drsom.paths import shown
from drsom.store.folder import RunDir, StorageError, describe_os_error, storage_cause
from drsom.training.loop import Diverged, Paused, Trainer

log = logging.getLogger("drsom")


@dataclass
class Ended:
    """How ``Bookkeeper.ending`` saw the epochs end: None while they ran to their own end."""

    status: str | None = None


class Bookkeeper:
    """The summary, tables and checkpoints of one run's ``trainer`` in ``run_dir``.

    ``header`` goes into every checkpoint beside the trainer's state (format, run and wandb ids);
    ``summary`` is the run's summary, updated in place and written after every change.
    ``writes=False``: a process above rank 0 of a multi-process run, which tells how its epochs
    ended the same way and writes nothing.
    """

    def __init__(
        self, run_dir: RunDir, summary: dict, trainer: Trainer, header: dict, writes: bool = True
    ) -> None:
        self.run_dir, self.summary, self.trainer, self.header = run_dir, summary, trainer, header
        self.writes = writes

    def write_tables(self) -> None:
        if self.writes:
            write_tables(self.run_dir, self.trainer)

    def save_checkpoint(self) -> None:
        if not self.writes:
            return
        self.run_dir.save_checkpoint({**self.header, "trainer": self.trainer.state_dict()})
        # what a rerun resumes from (the storage failure's line names it)
        self.summary["checkpoint_epoch"] = self.trainer.epoch

    def epoch_end(self, checkpoint: bool) -> None:
        """After the epoch's rows (``write_tables``): its checkpoint if ``checkpoint``, and the
        summary, running."""
        if checkpoint:
            self.save_checkpoint()
        self.close("running")

    def close(self, status: str, **extra: Any) -> None:
        """Record ``status`` (and ``extra`` fields) with the trainer's results; write it."""
        if not self.writes:
            return
        record(self.summary, self.trainer, status, **extra)
        self.run_dir.write_summary(self.summary)

    @contextlib.contextmanager
    def ending(self, preemption: PreemptionGuard) -> Iterator[Ended]:
        """Record what ends the epochs run inside (the module's table); yields ``Ended``."""
        ended = Ended()
        run_dir, trainer = self.run_dir, self.trainer
        try:
            yield ended
        except Paused as exc:  # preempted inside an epoch: save the position, resume there
            try:
                self.write_tables()
                self.save_checkpoint()
            except StorageError as error:
                self.storage_failure(error)
            self.close("interrupted", stopped_by=preemption.name)
            log.info(
                f"run {run_dir.name} {exc} (step {trainer.step}) on {preemption.name}: checkpoint "
                f"saved in {run_dir.checkpoint}; the same command (or the requeued job) resumes "
                "there"
            )
            ended.status = "interrupted"
        except Diverged as exc:
            self.close("diverged", diverged_epoch=exc.epoch, diverged_step=exc.step)
            log.warning(f"run {run_dir.name} diverged: {exc}; recorded in {run_dir.summary}")
            ended.status = "diverged"
        except (KeyboardInterrupt, SystemExit):  # SystemExit: a launcher's handler ending the job
            self.close("interrupted")
            raise
        except StorageError as exc:
            self.storage_failure(exc)
        except Exception as exc:
            if storage_cause(exc) is not None:  # a write outside the store's (e.g. a library's)
                self.storage_failure(exc)
            self.close("failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def storage_failure(self, exc: BaseException) -> None:
        """Record a failed write (full disk, read-only folder) truthfully, and raise it in one
        line.

        The files keep their previous complete versions (every write is atomic); the summary says
        "failed", why, and which epoch the last good checkpoint holds. On a full disk even the
        summary may not fit as a new file: then it is rewritten in place (its own blocks are freed
        first).
        """
        run_dir, summary = self.run_dir, self.summary
        cause = storage_cause(exc)
        why = str(exc) if isinstance(exc, StorageError) else f"{describe_os_error(cause)}"
        record(summary, self.trainer, "failed", error=why)
        saved = summary.get("checkpoint_epoch")
        where = (
            f"the last good checkpoint ({shown(run_dir.checkpoint)}) holds epoch {saved}"
            if saved is not None
            else "no checkpoint was saved yet"
        )
        if run_dir.write_summary_last_resort(summary):
            recorded = f"{run_dir.summary.name} says failed"
        else:
            recorded = f"{run_dir.summary.name} could not be updated either"
        raise StorageError(
            f"{why}; {where}; {recorded}; make room (or make the folder writable) and rerun the "
            "same command to resume"
        ) from exc


def write_tables(run_dir: RunDir, trainer: Trainer) -> None:
    """metrics.csv and steps.csv as the trainer holds them (no steps logged: no steps.csv)."""
    run_dir.write_table("metrics", trainer.metric_columns(), trainer.metrics)
    if trainer.steps:
        run_dir.write_table("steps", trainer.step_columns(), trainer.steps)
    else:
        run_dir.steps.unlink(missing_ok=True)
