"""The decoded arrays of an image folder or archive, cached on disk under a key of its content.

Decoding 60,000 JPEGs takes about 10 s on one core; reading them back from an uncompressed ``.npz``
takes a fraction of a second. The key is a SHA-256 of what the images came from, so a changed
archive or folder is never read from a stale cache, wherever it lies and whatever its mtime:

* an archive: its bytes (about 0.1 s for 20 MB);
* a folder: the sorted relative paths of its entries (hidden ones skipped, as the reader skips
  them), each with its kind, size and content hash;

together with what else decides the arrays: ``image_size``, Pillow's version (its JPEG decoder)
and ``FORMAT`` (bumped when the reader changes what it makes). One ``.npz`` per key; files of old
keys stay until removed (the folder can be deleted at any time).

Each entry holds a SHA-256 of its own arrays (``DIGEST``), checked on every load: an entry
changed since it was written (a pixel, a label, rewritten as a valid ``.npz`` by any program
that did not recompute it) is said in one warning, decoded again and written again; it is never
used. A cache that cannot be read is decoded again too; one that cannot be written is said in
one warning, and the run goes on without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import PIL

log = logging.getLogger("drsom")

FORMAT = 2  # of the arrays the reader makes and of the file: a new value invalidates every entry
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels", "classes", "mean", "std")
DIGEST = "digest"  # the entry's SHA-256 of ARRAYS (``arrays_digest``), stored beside them
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(entries: Iterable[tuple[str, bytes | None]]) -> str:
    """SHA-256 of ``(relative path, content or None for a folder)`` pairs, in the order given."""
    digest = hashlib.sha256()
    for name, data in entries:
        if data is None:
            digest.update(f"dir {name}\n".encode())
        else:
            content = hashlib.sha256(data).hexdigest()
            digest.update(f"file {name} {len(data)} {content}\n".encode())
    return digest.hexdigest()


def cache_key(source_digest: str, image_size: int | None) -> str:
    text = json.dumps(
        {
            "format": FORMAT,
            "source": source_digest,
            "image_size": image_size,
            "pillow": PIL.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of ``ARRAYS``: each one's name, dtype and shape, then its bytes."""
    digest = hashlib.sha256()
    for key in ARRAYS:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.reshape(-1).view(np.uint8))  # no copy of the images
    return digest.hexdigest()


def cache_file(folder: Path, key: str) -> Path:
    return folder / f"image_folder-{key[:32]}.npz"


def load(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays at ``path``; None when there is no such file, or (with a warning) when
    it cannot be read or is not what was written (its digest)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in ARRAYS}
            written = str(stored[DIGEST])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning(f"image cache {path} cannot be read ({exc}); decoding the images again")
        return None
    if arrays_digest(arrays) != written:
        log.warning(
            f"image cache {path} is not what was written (its arrays no longer match the digest "
            "stored with them); decoding the images again"
        )
        return None
    return arrays


def save(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` atomically (a temporary file, then a rename, so a concurrent
    reader sees the old file or the whole new one). False, with one warning, where it cannot."""
    # open(.., "xb") rather than mkstemp: the file gets the umask's mode (mkstemp's is 0600),
    # so a cache folder shared by a team stays readable to it
    tmp = path.parent / f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            # uncompressed: loading is then about as fast as the disk
            np.savez(f, **arrays, **{DIGEST: np.array(arrays_digest(arrays))})
        os.replace(tmp, path)
        return True
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        why = exc.strerror or type(exc).__name__
        log.warning(
            f"cannot write the image cache in {path.parent} ({why}); going on without it "
            "(data.cache=<a writable folder> keeps the decoded images, data.cache=false says "
            "not to)"
        )
        return False
