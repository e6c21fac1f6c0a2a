"""Run folders on a full or read-only disk: one error line, the last good checkpoint kept."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from run_helpers import only_run, read_csv, run_inprocess, summary_of, tiny

from drsom.job import runner
from drsom.launch import jobs
from drsom.paths import LONGEST_SHOWN, shown
from drsom.store import folder as run_folder
from drsom.store.folder import StorageError, describe_os_error

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
    assert str(err.value) == (
        f"cannot write the run folder {rd.path}: Read-only file system (EROFS); make it writable "
        "(or choose another results_dir=) and rerun"
    )
    after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


@contextlib.contextmanager
def refusing_new_files(folder: Path) -> Iterator[OSError]:
    """``folder`` made to refuse new files for this process, root included: root passes
    permission bits, so as root the folder is made immutable (``chattr +i``, which stops root
    too); otherwise its write permission is taken away. Yields the refusal a new file meets there
    (checked with a plain mkstemp, so that the test is not vacuous); skips where neither works."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root passes chmod, and there is no chattr to make a folder immutable")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"root passes chmod, and chattr +i fails here: {done.stderr.strip()}")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError) as refused:
            os.close(tempfile.mkstemp(dir=folder)[0])
        yield refused.value
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_a_run_folder_that_takes_no_new_file_is_refused_before_the_run_is_built(
    cifar_root, tmp_path, caplog, capsys
):
    # A resumable run (a checkpoint after epoch 1 of 2) whose folder then takes no new file; its
    # lock file, already there, still opens: only a write that makes a file finds out.
    args = tiny(cifar_root, tmp_path, "optimizer=sgd", "trainer.epochs=2")
    run_inprocess([*args, "trainer.stop_after_epochs=1"])
    rd = only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in rd.path.iterdir()}
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=args)
    caplog.clear()
    with refusing_new_files(rd.path) as refusal, pytest.raises(SystemExit) as exit_:
        jobs.run(cfg, base_dir=tmp_path)
    assert exit_.value.code == jobs.BAD_INPUT
    assert capsys.readouterr().err == (
        f"error: cannot write the run folder {rd.path}: {describe_os_error(refusal)}; make it "
        "writable (or choose another results_dir=) and rerun\n"
    )
    # refused at the lock: no checkpoint read, no trainer built, no epoch trained
    assert not [r.getMessage() for r in caplog.records if rd.name in r.getMessage()]
    assert {p.name: p.read_bytes() for p in rd.path.iterdir()} == before


LONG = "a-folder-name-of-sixty-characters-like-some-cluster-scratch-x"


@pytest.mark.parametrize("kind", ["file", "loop", "dangling"])
def test_a_run_folder_path_that_is_not_a_folder_is_one_line_with_its_path_shortened(
    kind, cifar_root, tmp_path, capsys, caplog
):
    results = tmp_path / LONG / LONG  # a run folder path over 150 characters
    args = tiny(cifar_root, results, "optimizer=sgd", "trainer.epochs=1")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=args)
    rd = runner.run_folder(cfg, tmp_path)
    results.mkdir(parents=True)
    what = {
        "file": "a file",
        "loop": "a symbolic link: Too many levels of symbolic links (ELOOP)",
        "dangling": "a symbolic link: No such file or directory (ENOENT)",
    }[kind]
    if kind == "file":
        rd.path.write_text("")
    else:
        rd.path.symlink_to(rd.path.name if kind == "loop" else "nowhere")
    with pytest.raises(SystemExit) as exit_:
        jobs.run(cfg, base_dir=tmp_path)
    assert exit_.value.code == jobs.BAD_INPUT
    assert len(str(rd.path)) > LONGEST_SHOWN
    assert capsys.readouterr().err == (
        f"error: the run folder {shown(rd.path)} is not a folder ({what}); remove it (or choose "
        "another results_dir=) and rerun\n"
    )
    assert sorted(p.name for p in results.iterdir()) == [rd.name]  # nothing made beside it
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
