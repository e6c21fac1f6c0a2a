"""Two things every one-line refusal about a folder needs: a path short enough to read in the
line (``shown``), and the answer to "can this folder take a new file?" (``try_write``).

Light (no torch, no Hydra): the launching process imports it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# A path in a message is cut to this many characters. The longest an ordinary run folder's file
# gets in tests (pytest's tmp folders, a run id and a file name) is about 120, so those stay
# whole; what is cut is the pathological kind: a symbolic link loop expanded by the resolver, a
# folder name pasted many times.
LONGEST_SHOWN = 150
# Kept from the start of a cut path: enough for the mount point and the store's folder; the rest
# of the budget goes to its end, which names the run and the file.
HEAD = 50
ELLIPSIS = "..."


def shown(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: whole up to ``LONGEST_SHOWN`` characters, else its start
    and its end with ``...`` between them (``LONGEST_SHOWN`` characters in all)."""
    text = os.fspath(path)
    if len(text) <= LONGEST_SHOWN:
        return text
    tail = LONGEST_SHOWN - HEAD - len(ELLIPSIS)
    return f"{text[:HEAD]}{ELLIPSIS}{text[-tail:]}"


def try_write(folder: Path) -> None:
    """Make and remove a file in ``folder``; raise the OSError the filesystem gives if it will not.

    ``os.access`` would answer too, from the permission bits and the mount flags; trying the
    very thing the store's writes do (a temporary file beside the target) also meets what those
    do not show: a quota at its limit, no free inodes, a network filesystem's own refusals.
    """
    handle, probe = tempfile.mkstemp(prefix=".drsom-write-test-", dir=folder)
    os.close(handle)
    # another process's clean-up may have taken it already: the write is what was tried
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)
