"""A study's journal file, read only as it was written: optuna's journal with a checked chain.

optuna's journal file storage is an append-only log, one JSON record a line, replayed by every
reader. Its own reader trusts what it finds: a line cut by a writer that died (a killed launch, a
full disk) is skipped, and the next writer appends onto it, which loses the study at the next
read; a line changed or dropped on disk replays silently as another study. This backend
(``JournalFile``, passed to optuna's ``JournalStorage``) keeps the format and adds two things:

* each record it writes carries ``drsom_chain``: a SHA-256 over the previous record's chain value
  and this record (its JSON with sorted keys), so a changed, dropped, inserted or reordered line
  no longer matches, and is refused in one line (``JournalError``) naming the file, the line
  and what to do. Records without one (journals written before it, by optuna alone) are read as
  they are, as long as no chained record came before them;
* a last line without its newline was left by a writer that died mid-line (writers hold the
  journal's lock while they write, so under that lock nobody is writing it): it is cut back to
  the last complete record, said in one line on stderr, before anyone appends. Anything else
  that does not read is refused, never repaired.

A cut exactly at a line's end leaves the journal as it was a few records earlier: that cannot be
told from an older journal, and reads as one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from optuna.storages.journal import BaseJournalBackend, JournalFileSymlinkLock
from optuna.storages.journal._storage import JournalOperation  # the op codes it replays

CHAIN = "drsom_chain"  # the key of each record's chain value
OP_CODES = frozenset(int(op) for op in JournalOperation)  # what a record can be
WHAT_TO_DO = (
    "restore it from a copy, or move it aside and relaunch to start the study again (runs "
    "already in the store are not trained again)"
)


class JournalError(ValueError):
    """A journal that cannot be read as written, or locked (one line: the file, what to do)."""


def link(previous: str, record: dict[str, Any]) -> str:
    """The chain value of ``record`` (without its own) after a record whose value is
    ``previous`` ("" before the first)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{previous}\n{text}".encode()).hexdigest()[:32]


class Position(NamedTuple):
    """Where log number n starts: its line's byte offset, the chain value before it, and
    whether a record before it carried one (then every later record must)."""

    offset: int
    chain: str
    chained: bool


class JournalFile(BaseJournalBackend):
    """optuna's journal file format and lock, every record checked on reading (module doc)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        # optuna's own lock (a symlink beside the file): every writer of the file takes it
        self.lock = JournalFileSymlinkLock(str(self.path))
        self.known: dict[int, Position] = {0: Position(0, "", False)}  # incremental reads
        if not self.path.exists():
            self.path.touch()
        if not self._ends_complete():  # checked again under the lock: a writer may be mid-line
            with self._locked("repair its cut last line"):
                self._repair()

    # ------------------------------------------------------------------------------ reading
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        for number, record in self._records(log_number_from):
            if number >= log_number_from:
                yield record

    def _records(self, start: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(log number, record) of each complete line from the nearest known one at or before
        ``start``; a last line without its newline (being written) is not read yet."""
        number = max(n for n in self.known if n <= start)
        at = self.known[number]
        with open(self.path, "rb") as f:
            left = os.fstat(f.fileno()).st_size - at.offset  # what is appended meanwhile waits
            f.seek(at.offset)
            for line in f:
                left -= len(line)
                if left < 0 or not line.endswith(b"\n"):
                    break
                record, at = self._checked(line, number, at)
                number += 1
                self.known[number] = at
                yield number - 1, record

    def _checked(self, line: bytes, number: int, at: Position) -> tuple[dict[str, Any], Position]:
        """The record on ``line`` (log ``number``, starting at ``at``) and where the next one
        starts; JournalError where it is not what was written."""
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            self._refuse(number, "is not a JSON record")
        if not isinstance(record, dict) or record.get("op_code") not in OP_CODES:
            self._refuse(number, "is not a record of an optuna journal")
        given = record.pop(CHAIN, None)
        chain = link(at.chain, record)
        if given is None and at.chained:
            self._refuse(number, "has no checksum although the lines before it have")
        if given is not None and given != chain:
            self._refuse(number, "does not match its checksum (it, or a line before it, changed)")
        return record, Position(at.offset + len(line), chain, at.chained or given is not None)

    def _refuse(self, number: int, what: str) -> NoReturn:
        raise JournalError(f"study journal {self.path}: line {number + 1} {what}; {WHAT_TO_DO}")

    def _checked_end(self) -> tuple[int, Position]:
        """The number of complete lines and where the next one starts, every one checked."""
        for _ in self._records(max(self.known)):
            pass
        last = max(self.known)
        return last, self.known[last]

    # ------------------------------------------------------------------------------ writing
    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self._locked("write to it"):
            self._repair()  # never after a partial line
            _, end = self._checked_end()
            chain, lines = end.chain, []
            for record in logs:
                chain = link(chain, record)
                lines.append(json.dumps({**record, CHAIN: chain}, separators=(",", ":")) + "\n")
            with open(self.path, "ab") as f:
                f.write("".join(lines).encode())
                f.flush()
                os.fsync(f.fileno())

    def _ends_complete(self) -> bool:
        with open(self.path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _repair(self) -> None:
        """Under the lock: cut a last line left without its newline back to the last complete
        record, once every complete one reads (else JournalError, and nothing is cut)."""
        if self._ends_complete():
            return
        lines, end = self._checked_end()
        cut = self.path.stat().st_size - end.offset
        with open(self.path, "r+b") as f:
            f.truncate(end.offset)
            f.flush()
            os.fsync(f.fileno())
        kept = f"line {lines}" if lines else "nothing: the cut line was the first"
        print(
            f"study journal {self.path}: its last line was cut ({cut} bytes without a line end, "
            f"left by a writer that died); cut back to its last complete record ({kept})",
            file=sys.stderr,
        )

    @contextlib.contextmanager
    def _locked(self, what: str) -> Iterator[None]:
        try:
            self.lock.acquire()
        except (OSError, RuntimeError) as exc:  # optuna's release fails after a failed symlink
            cause = exc.__context__ if isinstance(exc, RuntimeError) else exc
            why = getattr(cause, "strerror", None) or str(cause)
            raise JournalError(
                f"study journal {self.path}: cannot take its lock to {what} ({why}); make its "
                "folder writable and relaunch"
            ) from None
        try:
            yield
        finally:
            self.lock.release()
