"""Run folders on a full or read-only disk: one error line, the last good checkpoint kept."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from run_helpers import only_run, read_csv, run_inprocess, summary_of, tiny

from drsom.launch import jobs
from drsom.store import folder as run_folder
from drsom.store.folder import StorageError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def fill_disk_after_checkpoints(monkeypatch, good: int, no_new_files: bool = False) -> None:
    """The first ``good`` checkpoint saves succeed; then torch.save meets a full disk.

    ``no_new_files``: from then on no new file can be made at all (not even the summary's).
    """
    real_save, real_mkstemp, calls = torch.save, run_folder.tempfile.mkstemp, []

    def save(obj, f):
        calls.append(1)
        real_save(obj, f if len(calls) <= good else FullDisk(f, room=1000))

    def mkstemp(*args, **kwargs):
        if no_new_files and len(calls) > good:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(run_folder.torch, "save", save)
    monkeypatch.setattr(run_folder.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("summary_fits", [True, False], ids=["summary-written", "summary-too"])
def test_full_disk_is_one_line_keeps_the_last_checkpoint_and_says_failed(
    summary_fits, cifar_root, tmp_path, monkeypatch
):
    args = tiny(cifar_root, tmp_path, "optimizer=adam", "trainer.epochs=3")
    # summary-too: not even the summary fits as a new file; it is rewritten in place
    fill_disk_after_checkpoints(monkeypatch, good=1, no_new_files=not summary_fits)
    with pytest.raises(StorageError) as err:
        run_inprocess(args)
    message = str(err.value)
    assert "\n" not in message and "No space left on device (ENOSPC)" in message
    assert "checkpoint.pt) holds epoch 1" in message and "summary.json says failed" in message
    rd = only_run(tmp_path)
    assert rd.load_checkpoint()["trainer"]["epoch"] == 1  # the last good one, whole
    assert not list(rd.path.glob(".*.tmp"))
    summary = summary_of(rd)
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert summary["checkpoint_epoch"] == 1 and "unexpected pos" not in summary["error"]

    monkeypatch.undo()  # room again: the same command resumes from epoch 1
    assert run_inprocess(args) == "finished"
    summary = summary_of(rd)
    assert (summary["resumed_from_epoch"], summary["epoch"]) == (1, 3)
    assert [r["epoch"] for r in read_csv(rd.metrics)] == ["1", "2", "3"]


def test_full_disk_reaches_the_command_line_as_one_line(cifar_root, tmp_path, monkeypatch, capsys):
    fill_disk_after_checkpoints(monkeypatch, good=0)
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=tiny(cifar_root, tmp_path, "optimizer=sgd"))
    with pytest.raises(SystemExit) as exit_:
        jobs.run(cfg, base_dir=tmp_path)
    assert exit_.value.code == jobs.BAD_INPUT  # one line to act on, as for any store problem
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: cannot write ") and "\n" not in message
    assert "no checkpoint was saved yet" in message


def test_read_only_run_folder_is_one_line(cifar_root, tmp_path, monkeypatch):
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    rd = only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}

    def read_only(*a, **kw):  # what mkstemp meets on a read-only mount (root ignores chmod)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(run_folder.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError) as err:
        run_inprocess(args)
    message = str(err.value)
    assert message.startswith(f"cannot write {rd.path}/") and "(EROFS)" in message
    assert "\n" not in message
    after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }
