"""Tiny CIFAR-10/100 copies in the genuine on-disk format, for tests that must not download.

The real batch files are Python 2 pickles (protocol 2) of dicts whose keys and strings are Python 2
``str``: loaded with ``encoding="bytes"`` they give ``b"data"``, with ``encoding="latin1"`` (what
torchvision uses) they give ``"data"``. A Python 3 pickle of ``bytes`` would load as bytes either
way and break torchvision's reader, so this module writes Python 2 string opcodes for every bytes
object, numpy's raw array buffer included, just as the real files have them.

The images are learnable: each class has its own colour and a bright bar whose orientation and
position depend on the class, under strong per-pixel noise, so a tiny CNN gets well above chance in
an epoch or two while the task is not a single-pixel lookup.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


# Well-separated base colours for the first ten classes (further classes get random ones).
DISTINCT_COLOURS = np.array(
    [
        (200, 30, 40),
        (40, 160, 60),
        (190, 180, 30),
        (20, 90, 190),
        (200, 110, 30),
        (120, 30, 160),
        (40, 180, 180),
        (190, 40, 170),
        (110, 60, 20),
        (120, 120, 120),
    ]
)


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us replace one opcode writer
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _write(path: Path, obj: object) -> None:
    path.write_bytes(_py2_pickle(obj))


def make_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Learnable uint8 images (N, 32, 32, 3): class colour + class-placed bar + noise."""
    palette = np.random.RandomState(1234).randint(30, 200, size=(num_classes, 3))
    palette[:10] = DISTINCT_COLOURS[:num_classes]
    n = len(labels)
    images = np.empty((n, 32, 32, 3), dtype=np.float64)
    images[:] = palette[labels][:, None, None, :]
    for i, c in enumerate(labels):
        # A 6-pixel-thick bar, horizontal for even classes and vertical for odd ones, at a
        # class-dependent position (far enough apart that 4-pixel crops keep classes distinct).
        pos = 4 + 6 * ((c // 2) % 4)
        if c % 2 == 0:
            images[i, pos : pos + 6, :, :] += 60
        else:
            images[i, :, pos : pos + 6, :] += 60
    images += rng.normal(0.0, 25.0, size=images.shape)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _rows(images: np.ndarray) -> np.ndarray:
    # CIFAR rows: 1024 red values, then 1024 green, then 1024 blue, each plane row-major.
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def write_fake_cifar10(
    root: str | os.PathLike, n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """Write ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta); return root.

    The training examples are spread over the five batch files like the real 5 x 10,000.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()

    def batch(n: int, label: str) -> dict[bytes, object]:
        labels = _balanced_labels(n, 10, rng)
        return {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": _rows(make_images(labels, 10, rng)),
            b"filenames": [f"fake_{next(counter):06d}.png".encode() for _ in range(n)],
        }

    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _write(folder / f"data_batch_{i}", batch(len(part), f"training batch {i} of 5"))
    _write(folder / "test_batch", batch(n_test, "testing batch 1 of 1"))
    per_batch = -(-n_train // 5)
    _write(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": per_batch,
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072,
        },
    )
    return Path(root)


def write_fake_cifar100(
    root: str | os.PathLike, n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """Write ``root/cifar-100-python`` (train, test, meta) in the genuine format; return root."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)

    def split(n: int, label: str) -> dict[bytes, object]:
        fine = _balanced_labels(n, 100, rng)
        return {
            b"filenames": [f"fake_{label}_{i:06d}.png".encode() for i in range(n)],
            b"batch_label": f"{label} batch 1 of 1".encode(),
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) // 5 for v in fine],
            b"data": _rows(make_images(fine, 100, rng)),
        }

    _write(folder / "train", split(n_train, "training"))
    _write(folder / "test", split(n_test, "testing"))
    _write(
        folder / "meta",
        {
            b"fine_label_names": [f"class_{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(20)],
        },
    )
    return Path(root)
