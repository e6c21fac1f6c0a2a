"""The run's bookkeeping (drsom/job/bookkeeping.py): each way the epochs end, as the summary
records it, and which of them end the run and which raise again. In-process, on a stand-in
trainer: the summary, tables and checkpoint land in a run folder under tmp_path."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from drsom.job.bookkeeping import Bookkeeper
from drsom.job.preemption import PreemptionGuard
from drsom.store.folder import RunDir, StorageError
from drsom.training.loop import Diverged, Paused

ROW = {"epoch": 2, "test_acc": 0.5, "test_loss": 1.5, "val_acc": 0.25, "val_loss": 2.0}


class Trainer(SimpleNamespace):
    """What the bookkeeping reads of a trainer: rows, position, counters, its state."""

    def metric_columns(self) -> list[str]:
        return list(ROW)

    def step_columns(self) -> list[str]:
        return ["step", "loss"]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}


def bookkeeper(tmp_path, epoch: int = 2) -> Bookkeeper:
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    trainer = Trainer(
        metrics=[ROW] if epoch else [],
        steps=[],
        epoch=epoch,
        epochs=3,
        step=7,
        seconds={"train": 1.0, "total": 2.0},
        counts={"forward": 7},
    )
    return Bookkeeper(run_dir, {"run_id": "run"}, trainer, {"format": 1, "run_id": "run"})


def guard() -> PreemptionGuard:
    return PreemptionGuard(signal.SIGUSR2)


def test_epochs_that_run_to_their_end_leave_the_status_to_the_caller(tmp_path):
    book = bookkeeper(tmp_path)
    with book.ending(guard()) as ended:
        book.write_tables()
        book.epoch_end(checkpoint=False)
    assert ended.status is None
    assert book.run_dir.read_summary()["status"] == "running"
    assert book.run_dir.load_checkpoint() is None  # none was due
    book.close("finished")
    summary = book.run_dir.read_summary()
    assert (summary["status"], summary["epoch"]) == ("finished", 2)
    assert summary["final"]["test_acc"] == 0.5
    assert summary["ended_at"] == summary["updated_at"]


def test_a_due_checkpoint_is_saved_and_named_in_the_summary(tmp_path):
    book = bookkeeper(tmp_path)
    book.epoch_end(checkpoint=True)
    assert book.run_dir.load_checkpoint()["trainer"] == {"epoch": 2}
    assert book.run_dir.read_summary()["checkpoint_epoch"] == 2


def test_a_pause_saves_the_position_and_ends_the_run_interrupted(tmp_path):
    book = bookkeeper(tmp_path)
    with book.ending(guard()) as ended:
        raise Paused(3, 4, 10)
    assert ended.status == "interrupted"
    summary = book.run_dir.read_summary()
    assert (summary["status"], summary["stopped_by"]) == ("interrupted", "SIGUSR2")
    assert summary["checkpoint_epoch"] == 2
    assert book.run_dir.load_checkpoint()["run_id"] == "run"
    assert book.run_dir.metrics.exists()


def test_divergence_is_recorded_with_its_epoch_and_step(tmp_path):
    book = bookkeeper(tmp_path)
    with book.ending(guard()) as ended:
        raise Diverged(3, 9)
    assert ended.status == "diverged"
    summary = book.run_dir.read_summary()
    assert (summary["status"], summary["diverged_epoch"], summary["diverged_step"]) == (
        "diverged",
        3,
        9,
    )


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_is_recorded_and_raised_again(tmp_path, stop):
    book = bookkeeper(tmp_path)
    with pytest.raises(stop), book.ending(guard()):
        raise stop()
    assert book.run_dir.read_summary()["status"] == "interrupted"


def test_any_other_error_is_recorded_as_failed_and_raised_again(tmp_path):
    book = bookkeeper(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), book.ending(guard()):
        raise RuntimeError("boom")
    summary = book.run_dir.read_summary()
    assert (summary["status"], summary["error"]) == ("failed", "RuntimeError: boom")


def test_a_refused_write_is_one_line_naming_the_last_good_checkpoint(tmp_path):
    book = bookkeeper(tmp_path)
    with pytest.raises(StorageError) as raised, book.ending(guard()):
        raise StorageError("disk full")
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith("disk full; no checkpoint was saved yet; summary.json says failed")
    summary = book.run_dir.read_summary()
    assert (summary["status"], summary["error"]) == ("failed", "disk full")

    book.save_checkpoint()
    full = pytest.raises(StorageError, match=r"holds epoch 2; summary.json says failed")
    with full, book.ending(guard()):
        raise OSError(28, "No space left on device")
