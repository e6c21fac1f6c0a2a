"""A run's folder in the local results store: its files, its lock, its checkpoints; atomic writes.

``<results_dir>/<run_id>/`` holds

* ``config.yaml``    the resolved config of the run;
* ``metrics.csv``    one row per completed epoch (columns:
``drsom.training.loop.Trainer.metric_columns``);
* ``steps.csv``      every ``trainer.log_every_steps`` steps: the loss and the optimizer's
                     diagnostics (columns: ``drsom.training.loop.Trainer.step_columns``);
* ``summary.json``   status (running|interrupted|finished|diverged|failed), final and best
                     accuracies, wall time, git commit, versions; sealed (``digest``: the
                     sha256 of the files above as it was written, and of itself, see ``SEAL``);
* ``checkpoint.pt``  everything needed to continue the run exactly (never committed), and
  ``checkpoint.prev.pt`` the one before it, the fallback when the newest cannot be read;
* ``.lock``          held (flock) by the one process training the run; it names that process.

The folder's name is the run id (``drsom.store.identity``), a function of the config, so the same
command always finds the same folder (and a requeued or re-launched job resumes instead of
starting a second copy); what state a run is in is ``drsom.store.state``. Every write goes to a
temporary file in the same folder, is fsynced and then renamed over the target: a reader, or a
process killed at any moment, sees the old file or the new one, never a truncated one. Saving a
checkpoint first makes ``checkpoint.prev.pt`` a hard link to the current one, then renames the new
one over ``checkpoint.pt``, so both names always hold complete files.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from drsom.paths import shown, try_write
from drsom.store.identity import run_id
from drsom.store.locks import lock_is_held

try:  # advisory locks; absent on Windows, where concurrent launches are not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


log = logging.getLogger("drsom")

# How long ``RunDir.locked`` retries: long enough that a status probe (which holds the lock for
# microseconds) never makes a job give up, short enough to report a real second process at once.
LOCK_RETRY_S = 1.0


class RunBusy(Exception):
    """Another process holds the run folder; the message is one line."""


class CheckpointError(Exception):
    """The checkpoint exists but cannot be read; the message names its path."""


class StorageError(Exception):
    """A file of the store cannot be written: full disk, quota, read-only folder (one line)."""


# What the filesystem says when it will not take a file, whoever's fault: the user's to fix.
STORAGE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "EIO")
    if hasattr(errno, name)
)


def storage_cause(exc: BaseException) -> OSError | None:
    """The filesystem's refusal behind ``exc``, if that is what it is.

    torch.save reports a failed write as ``RuntimeError: ... unexpected pos ...`` whose
    ``__context__`` is the OSError, so the whole chain is searched.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the system's words and the error's name."""
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{exc.strerror or exc} ({name})"


# ------------------------------------------------------------------------ atomic writes
# mkstemp creates files readable by their owner only; results on a shared cluster filesystem
# should get the permissions any other new file gets (0666 less the umask), so read it once.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temporary_name(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _preserve(path: Path, keep: Path) -> None:
    """Make ``keep`` a complete copy of ``path`` (if it exists), atomically.

    A hard link costs nothing and shares the bytes until ``path`` is renamed over; filesystems
    without hard links get a copy, fsynced before it takes the name.
    """
    if not path.exists():
        return
    tmp = _temporary_name(keep)
    try:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, keep)
        # Already the same file (a save killed between the two renames): rename did nothing.
        tmp.unlink(missing_ok=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", keep: Path | None = None) -> Iterator[io.IOBase]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    With ``keep``, the file being replaced is kept under that name (see ``_preserve``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_storage_error(path, exc)
        raise
    try:
        if hasattr(os, "fchmod"):  # not on Windows before Python 3.13
            os.fchmod(fd, FILE_MODE)
        newline = {"newline": ""} if "b" not in mode else {}
        with os.fdopen(fd, mode, **newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            _preserve(path, keep)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_storage_error(path, exc)
        raise
    _fsync_dir(path.parent)


def _raise_storage_error(
    path: Path,
    exc: BaseException,
    what: str = "",
    advice: str = "the file keeps its previous version",
) -> None:
    """Raise StorageError (one line, from ``exc``) if the filesystem refused the write:
    ``cannot write <what><path>: <why>; <advice>``."""
    cause = storage_cause(exc)
    if cause is not None:
        raise StorageError(
            f"cannot write {what}{shown(path)}: {describe_os_error(cause)}; {advice}"
        ) from exc


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as CSV; floats at full precision (repr), missing values and NaN as empty cells."""
    with atomic_file(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, list | tuple):
        return " ".join(repr(v) for v in value)
    return repr(value) if isinstance(value, float) else value


def _json_safe(value: Any) -> Any:
    # JSON has no NaN or infinity; null says "no value" to every reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------------ the seal
# Every summary is written sealed: under ``digest`` the sha256 of each of these files as they
# were when it was written (null: absent), and of the summary itself (``"summary"``). A
# summary is written after the tables and config it describes, so a terminal run's files are
# exactly those its last summary sealed: a digit typed over in an earlier row of metrics.csv, a
# line of config.yaml that the run id does not hash, a number of summary.json itself, each passes
# every other check, and only the seal sees it (``drsom.store.state``). Summaries written before
# the seal existed have no ``digest`` and are read as before.
SEAL = "digest"
SEALED_FILES = ("config.yaml", "metrics.csv", "steps.csv")


def file_digest(path: Path) -> str | None:
    """sha256 of the file's bytes; None when it cannot be read (absent)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def summary_digest(summary: Mapping[str, Any]) -> str:
    """sha256 of ``summary`` as JSON with sorted keys, less its own entry in the seal: the same
    for the dict written and for the one ``json.loads`` reads back."""
    body = dict(summary)
    seal = body.get(SEAL)
    if isinstance(seal, Mapping):
        body[SEAL] = {k: v for k, v in seal.items() if k != "summary"}
    text = json.dumps(_json_safe(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def seal_intact(summary: Mapping[str, Any]) -> bool:
    """Whether the summary is as it was written (True for one written before the seal)."""
    if SEAL not in summary:
        return True
    seal = summary[SEAL]
    return isinstance(seal, Mapping) and seal.get("summary") == summary_digest(summary)


# ---------------------------------------------------------------------------- run folder
def _refuse_unwritable(folder: Path, exc: OSError) -> None:
    """Raise StorageError (one line naming the folder) if the filesystem refused the write."""
    advice = "make it writable (or choose another results_dir=) and rerun"
    _raise_storage_error(folder, exc, "the run folder ", advice)


def _what_is(path: Path) -> str:
    """What stands at ``path`` instead of a folder, in a few words."""
    if not path.is_symlink():
        return "a file"
    try:
        path.stat()
    except OSError as exc:
        return f"a symbolic link: {describe_os_error(exc)}"
    return f"a symbolic link to {shown(path.resolve())}"


class RunDir:
    """The files of one run; see the module docstring."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.csv"
        self.steps = self.path / "steps.csv"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.previous_checkpoint = self.path / "checkpoint.prev.pt"
        self.lock_path = self.path / ".lock"
        self.aside: list[str] = []  # the checkpoints set aside through this object

    @classmethod
    def of(cls, config: Mapping[str, Any], base: Path) -> RunDir:
        """The folder of the run of the resolved ``config``: ``<results_dir>/<run_id>``, a
        relative ``results_dir`` taken from ``base`` (the launch's: docs/usage.md)."""
        results = Path(config["results_dir"]).expanduser()
        return cls((results if results.is_absolute() else base / results) / run_id(config))

    @property
    def name(self) -> str:
        return self.path.name

    def read_summary(self) -> dict[str, Any] | None:
        """The summary, None when there is none, it is not a JSON object (unreadable) or it is
        not as it was written (its seal, ``seal_intact``, does not match).

        An unreadable summary is treated as absent: the run is resumed from its checkpoint
        (or redone), which writes a complete one.
        """
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError):  # missing, unreadable, not JSON
            return None
        if not isinstance(summary, dict) or not seal_intact(summary):
            return None
        return summary

    def sealed(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """``summary`` with its seal (``SEAL``) for the folder's files as they are now."""
        files = {name: file_digest(self.path / name) for name in SEALED_FILES}
        out = {**{k: v for k, v in summary.items() if k != SEAL}, SEAL: files}
        out[SEAL] = {**files, "summary": summary_digest(out)}
        return out

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write the summary, sealed: call it after the files it describes are written."""
        write_json(self.summary, self.sealed(summary))

    def write_summary_last_resort(self, summary: Mapping[str, Any]) -> bool:
        """Write the summary after a failed write elsewhere; whether it now says what happened.

        Atomically if possible; on a full disk the new file may not fit next to the old one, so
        then the old one is rewritten in place (truncating it frees its blocks first). A write cut
        short there leaves a summary that ``read_summary`` treats as absent, never a wrong one.
        """
        try:
            self.write_summary(summary)
            return True
        except (StorageError, OSError):
            pass
        try:
            with open(self.summary, "w") as f:
                f.write(json.dumps(_json_safe(self.sealed(summary)), indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False

    def read_config(self) -> dict[str, Any] | None:
        try:
            return OmegaConf.to_container(OmegaConf.load(self.config))
        except Exception:  # missing or unreadable: nothing to compare against
            return None

    def write_config(self, cfg: Mapping[str, Any]) -> None:
        write_text(self.config, OmegaConf.to_yaml(OmegaConf.create(dict(cfg))))

    def write_table(self, which: str, columns: Sequence[str], rows: Sequence[Mapping]) -> None:
        write_csv(getattr(self, which), columns, rows)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write ``checkpoint.pt`` atomically; the one it replaces becomes checkpoint.prev.pt."""
        with atomic_file(self.checkpoint, "wb", keep=self.previous_checkpoint) as f:
            torch.save(dict(state), f)

    def load_checkpoint(self, path: Path | None = None) -> dict[str, Any] | None:
        """The saved state (of ``path``, default ``checkpoint.pt``), None when there is none.

        CheckpointError (naming the file) when it exists but cannot be read.
        """
        path = self.checkpoint if path is None else path
        if not path.exists():
            return None
        try:
            # Everything in a checkpoint is tensors and plain Python data: no code is unpickled.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read checkpoint {shown(path)} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})"
            ) from exc
        if not isinstance(state, dict) or "trainer" not in state:
            raise CheckpointError(
                f"cannot read checkpoint {shown(path)} (not a checkpoint of this suite)"
            )
        return state

    def checkpoints(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The checkpoints a rerun may resume from, newest first (``checkpoint.pt``, then
        ``checkpoint.prev.pt``), each ``(path, state)``. One that cannot be read or belongs to
        another run is set aside (``set_aside``) and skipped; the caller sets aside one whose
        state does not load into its trainer."""
        for path in (self.checkpoint, self.previous_checkpoint):
            try:
                state = self.load_checkpoint(path)
                if state is None:
                    continue
                if state.get("run_id", self.name) != self.name:
                    owner = state["run_id"]
                    raise CheckpointError(
                        f"checkpoint {shown(path)} belongs to run {owner}, not to this one"
                    )
            except CheckpointError as exc:
                self.set_aside(path, exc)
                continue
            yield path, state

    def set_aside(self, path: Path, why: Exception) -> None:
        """Move the checkpoint ``path`` to ``*.corrupt.pt`` (kept for a post-mortem, never read
        again, so that a rerun does not fail on it again), saying ``why`` on one line."""
        aside = path.with_name(path.name.replace(".pt", ".corrupt.pt"))
        path.replace(aside)
        log.warning(f"{why}; moved to {aside.name}")
        self.aside.append(path.name)

    def remove_temporaries(self) -> None:
        """Delete the temporaries of writes cut short by a kill (call while holding the lock)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the run's results (for ``force=true``); the lock file stays."""
        checkpoints = (self.checkpoint, self.previous_checkpoint, *self.path.glob("*.corrupt.pt"))
        for path in (*checkpoints, self.summary, self.metrics, self.steps, self.config):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.path / "wandb", ignore_errors=True)

    def remove_if_unused(self, made: Sequence[Path] = ()) -> None:
        """Remove the folder if it holds nothing but its lock file (a run refused before its
        first write), then those of ``made`` (folders above it this launch made) that are empty;
        anything else is kept (rmdir removes empty folders only). Called by the lock's holder."""
        with contextlib.suppress(OSError):
            if {p.name for p in self.path.iterdir()} <= {self.lock_path.name}:
                self.lock_path.unlink(missing_ok=True)
                self.path.rmdir()
                for folder in made:  # innermost first
                    folder.rmdir()

    # ------------------------------------------------------------------------- locking
    def check_is_folder(self) -> None:
        """StorageError (one line) if something other than a folder stands at the run folder's
        path: a file, a symbolic link that loops or leads nowhere. No run can be stored there."""
        if (self.path.exists() or self.path.is_symlink()) and not self.path.is_dir():
            raise StorageError(
                f"the run folder {shown(self.path)} is not a folder ({_what_is(self.path)}); "
                "remove it (or choose another results_dir=) and rerun"
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold an exclusive lock on the folder: one process per run. Released on exit or death.

        The folder is tried first, so that a run that could not store anything is refused here
        in one line, before it is built or trained: a path that is not a folder (a file, a
        symbolic link that loops or leads nowhere), and a folder that takes no new file (a
        read-only mount, no write permission, an immutable folder), where an existing lock file
        still opens but every write of the store (a temporary file beside its target) would fail.
        """
        self.check_is_folder()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.lock_path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        except OSError as exc:
            _refuse_unwritable(self.path, exc)
            raise
        try:
            try_write(self.path)
        except OSError as exc:
            f.close()
            _refuse_unwritable(self.path, exc)
            raise
        try:
            self._acquire(f)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
            yield self
        finally:
            f.close()

    def _acquire(self, f: io.IOBase) -> None:
        if fcntl is None:
            return
        deadline = time.monotonic() + LOCK_RETRY_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunBusy(
                    f"run {self.name} is being trained by {holder} (lock {shown(f.name)}); "
                    "wait for it to end or stop it, then rerun"
                ) from None
            except OSError as exc:  # e.g. Lustre mounted without -o flock: ENOSYS
                log.warning(
                    f"no file locks on the filesystem of {self.path} ({exc.strerror}): "
                    "two launches of the same run would not be kept apart"
                )
                return

    def is_locked(self) -> bool | None:
        """Whether a live process holds the run's lock; None when the filesystem cannot tell."""
        return lock_is_held(self.lock_path)
