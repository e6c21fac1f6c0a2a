"""Datasets as epoch loaders: ``build_data(name, ...) -> DataBundle``.

Names: ``cifar10``, ``cifar100`` (torchvision's readers; ``download`` for users with a network) and
``digits`` (scikit-learn's 8x8 digits resized to 32x32x3; no download). Images are held in memory as
uint8 and augmented with torch ops, on the host or, for CUDA, on the device (see ``loader``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DatasetUnavailable
from .loader import EpochLoader, epoch_seed

DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "digits")

CROP_PADDING = 4
SUBSET_SEED = 0  # fixed: the subset is part of the dataset's definition, not of a run's seed


@dataclass
class DataBundle:
    train: EpochLoader
    test: EpochLoader
    num_classes: int
    num_train: int
    num_test: int
    fingerprint: str = ""  # what was read (``fingerprint``), whichever folder it came from


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """``<train>+<test>:<sha256[:12]>`` of the images and labels as read (after ``train_subset``):
    two runs on the same data have the same one wherever the files lie; a 200-image copy of
    CIFAR-10 and the real one never do."""
    digest = hashlib.sha256()
    for key in ("train_images", "train_targets", "test_images", "test_targets"):
        t = tensors[key].contiguous()
        digest.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.numpy().tobytes())
    n_train, n_test = len(tensors["train_images"]), len(tensors["test_images"])
    return f"{n_train}+{n_test}:{digest.hexdigest()[:12]}"


def _check_positive(label: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
        raise ValueError(f"{label} must be a positive integer, got {value!r}")


def build_data(
    name: str,
    *,
    root: str | os.PathLike = "data",
    download: bool = True,
    verify: bool = True,
    train_subset: int | None = None,
    augment: bool = True,
    batch_size: int = 128,
    test_batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    gpu_resident: bool | None = None,
    num_workers: int = 0,
    channels_last: bool = False,
) -> DataBundle:
    """Load a dataset and wrap both splits in epoch loaders.

    - ``verify=False`` turns off torchvision's MD5 check of the CIFAR files (for small copies in the
      genuine format); nothing else about reading changes.
    - ``train_subset=N`` keeps the first N examples of a fixed permutation of the training set.
    - ``augment``: random 32x32 crop of the image padded by 4, and a horizontal flip (not for
      digits).
    - ``test_batch_size`` defaults to ``batch_size``.
    - ``gpu_resident``: keep the whole dataset on ``device`` and augment there; ``None`` means "yes
      when ``device`` is CUDA". True with a CPU device runs the same code on host tensors.
    - ``num_workers``: threads preparing batches ahead on the host path (0: in the calling thread).
    - ``channels_last``: inputs come out NCHW with channels_last strides (no extra copy).

    Raises ValueError for bad arguments and DatasetUnavailable when the data cannot be had.
    """
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise ValueError(
            f"unknown dataset {name!r}: data must be one of {', '.join(DATASET_NAMES)}"
        )
    _check_positive("batch_size", batch_size)
    _check_positive("test_batch_size", test_batch_size)
    _check_positive("train_subset", train_subset)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")

    if key == "digits":
        from .digits import load_digits

        tensors, num_classes, mean, std = load_digits()
        flip = False  # digits are not mirror-invariant (a flipped 3 is no digit; 2 and 5 swap)
    else:
        from .cifar import load_cifar

        tensors, num_classes, mean, std = load_cifar(key, root, download=download, verify=verify)
        flip = True

    images, targets = tensors["train_images"], tensors["train_targets"]
    if train_subset is not None:
        if train_subset > len(images):
            raise ValueError(
                f"train_subset={train_subset} exceeds the {len(images)} training examples of {key}"
            )
        keep = np.random.RandomState(SUBSET_SEED).permutation(len(images))[:train_subset]
        keep_t = torch.from_numpy(np.sort(keep))
        images, targets = images[keep_t], targets[keep_t]

    read = fingerprint({**tensors, "train_images": images, "train_targets": targets})
    device = torch.device(device)
    resident = device.type == "cuda" if gpu_resident is None else bool(gpu_resident)
    storage = device if resident else torch.device("cpu")
    common = dict(mean=mean, std=std, device=device, channels_last=channels_last)
    train = EpochLoader(
        images.to(storage),
        targets.to(storage),
        batch_size=batch_size,
        shuffle=True,
        crop_padding=CROP_PADDING if augment else 0,
        flip=flip and augment,
        seed=seed,
        num_workers=num_workers,
        **common,
    )
    test = EpochLoader(
        tensors["test_images"].to(storage),
        tensors["test_targets"].to(storage),
        batch_size=test_batch_size or batch_size,
        num_workers=num_workers,
        **common,
    )
    return DataBundle(train, test, num_classes, len(images), len(tensors["test_images"]), read)


__all__ = [
    "DATASET_NAMES",
    "DataBundle",
    "DatasetUnavailable",
    "EpochLoader",
    "build_data",
    "epoch_seed",
]
