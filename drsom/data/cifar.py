"""CIFAR-10/100 through torchvision's readers, with a fast, bounded answer when the data is missing.

``verify=False`` exists for small copies in the genuine on-disk format (test fixtures, subsets):
they cannot match torchvision's MD5 sums. It swaps in a reader whose sums are all ``None``, which
makes torchvision's own checks test only that each file exists; the reading code is untouched.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.error
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from .dataset import ImageDataset
from .errors import DatasetUnavailable

# The values used by the reference CIFAR training code (the std is the per-image-averaged one that
# the AdaBelief and most CIFAR repositories copy; keep it so results are comparable).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

READERS: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}
PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# Seconds: first to see whether the download host answers at all, then for any single socket
# operation of the download, so a dead network fails in seconds instead of hanging.
PROBE_TIMEOUT = 5.0
SOCKET_TIMEOUT = 30.0


@cache
def _unverified(reader: type[CIFAR10]) -> type[CIFAR10]:
    """The same reader with every MD5 sum set to None (torchvision then checks existence only)."""
    return type(
        f"Unverified{reader.__name__}",
        (reader,),
        {
            "train_list": [[name, None] for name, _ in reader.train_list],
            "test_list": [[name, None] for name, _ in reader.test_list],
            "meta": {**reader.meta, "md5": None},
        },
    )


def _expected_files(reader: type[CIFAR10], folder: Path) -> list[Path]:
    names = [n for n, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
    return [folder / n for n in names]


def _host_answers(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within ``timeout`` s (DNS included, hence the thread)."""
    done = threading.Event()
    answered: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout)
    return bool(answered)


def _download(reader: type[CIFAR10], root: Path, pretty: str, hint: str) -> None:
    url = urlparse(reader.url)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    if not _host_answers(host, port, PROBE_TIMEOUT):
        raise DatasetUnavailable(
            f"{pretty} not found under {root} and {host} cannot be reached to download it; {hint}"
        )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT)
    try:
        reader(str(root), train=True, download=True)
    except (OSError, urllib.error.URLError, RuntimeError) as exc:
        raise DatasetUnavailable(
            f"{pretty} download to {root} failed ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def load_cifar(name: str, root: str | os.PathLike, *, download: bool, verify: bool) -> ImageDataset:
    """Read CIFAR-10/100: uint8 NHWC images and int64 labels for both splits."""
    base = READERS[name]
    pretty = PRETTY[name]
    root_abs = Path(root).expanduser().resolve()
    folder = root_abs / base.base_folder
    hint = f"set data.root=/path/containing/{base.base_folder} (looked in {folder})"
    if not all(p.is_file() for p in _expected_files(base, folder)):
        if not download:
            raise DatasetUnavailable(
                f"{pretty} not found under {root_abs} and download=False; {hint}, "
                "or data.download=true to fetch it"
            )
        _download(base, root_abs, pretty, hint)

    reader = base if verify else _unverified(base)
    try:
        splits = {
            s: reader(str(root_abs), train=(s == "train"), download=False)
            for s in ("train", "test")
        }
    except RuntimeError as exc:
        raise DatasetUnavailable(
            f"{pretty} files in {folder} fail torchvision's MD5 check ({exc}); if this is a "
            "deliberate small copy in the same format set data.verify=false, otherwise remove it "
            "and download again"
        ) from exc
    tensors: dict[str, torch.Tensor] = {}
    for split, ds in splits.items():
        tensors[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))
        tensors[f"{split}_labels"] = torch.as_tensor(ds.targets, dtype=torch.int64)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageDataset(
        **tensors, num_classes=len(splits["train"].classes), mean=mean, std=std, flip=True
    )


def cifar10(root: str | os.PathLike = "data", download: bool = False, verify: bool = True):
    """CIFAR-10 from ``root``/cifar-10-batches-py (fetched there when ``download``)."""
    return load_cifar("cifar10", root, download=download, verify=verify)


def cifar100(root: str | os.PathLike = "data", download: bool = False, verify: bool = True):
    """CIFAR-100 from ``root``/cifar-100-python (fetched there when ``download``)."""
    return load_cifar("cifar100", root, download=download, verify=verify)
