"""Advisory file locks (flock), held by a live process and released when it dies.

One home for the two things the store and the studies ask of a lock file: hold it, and tell
whether someone holds it. Light to import (the launching process of a sweep uses it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

try:  # advisory locks; absent on Windows, where concurrent launches are not guarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


@contextlib.contextmanager
def hold_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made if missing), waiting for it if another process
    holds it, and write ``holder`` into it for whoever finds it held."""
    with open(path, "a+") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{holder}\n")
        f.flush()
        yield


def lock_is_held(path: Path) -> bool | None:
    """Whether a live process holds the lock on ``path``; None when the filesystem cannot tell."""
    if fcntl is None:
        return None
    try:
        f = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with f:
        try:
            # Shared and non-blocking: it never waits, and a holder that retries (a trainer,
            # for LOCK_RETRY_S) cannot be made to give up by this probe.
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
