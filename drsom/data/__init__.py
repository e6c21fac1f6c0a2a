"""Datasets as epoch loaders: ``load_dataset(node) -> ImageDataset``, ``build_data -> DataBundle``.

A data config is a Hydra ``_target_`` node naming a function that returns an
:class:`~drsom.data.dataset.ImageDataset` (the contract is there): the suite's ``cifar10``,
``cifar100`` (torchvision's readers; ``download`` for users with a network), ``digits``
(scikit-learn's 8x8 digits resized to 32x32x3; no download), ``image_folder`` (torchvision's
ImageFolder layout, from a folder or an archive; ``cifar10_jpeg`` is one), or a user's own.
Images are held in memory as uint8 and augmented with torch ops, on the host or, for CUDA, on the
device (see ``loader``).

Floor 2: may import ``drsom.cfg`` only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drsom.cfg.checks import refusal
from drsom.cfg.targets import TargetError, build, check_keywords

from .dataset import DATA_DEFAULTS, DATA_META, ImageDataset
from .errors import DatasetUnavailable
from .loader import EpochLoader, epoch_seed

CROP_PADDING = 4
SUBSET_SEED = 0  # fixed: the subset is part of the dataset's definition, not of a run's seed
TRAIN_EVAL_SEED = 1  # which training examples the clean train metric reads (fixed, see build_data)


@dataclass
class DataBundle:
    train: EpochLoader
    test: EpochLoader
    num_classes: int
    num_train: int
    num_test: int
    fingerprint: str = ""  # what was read (``fingerprint``), whichever folder it came from
    input_shape: tuple[int, int, int] = (3, 32, 32)  # (C, H, W) of the model's inputs
    val: EpochLoader | None = None  # held out of the training split (``val_size``); None: none
    train_eval: EpochLoader | None = None  # a fixed slice of the training examples, unaugmented
    num_val: int = 0
    classes: tuple[str, ...] | None = None  # the name of each label, where the dataset has them


def validation_count(val_size: int | float | None, n_train: int) -> int:
    """How many of ``n_train`` training examples ``data.val_size`` holds out.

    An integer is a count, a float a fraction of the training split in (0, 1) and nothing else
    (rounded half to even): ``1.0`` would be read as 1 image by one reader and as the whole split
    by another, and hash as another run than ``1``, so it is refused; 0 or None: no validation
    split. Raises ValueError (one line) for anything else and for a split that would leave no
    training example.
    """
    accepted = "an integer count >= 0 or a fraction in (0, 1)"
    if val_size is None:
        return 0
    if isinstance(val_size, bool) or not isinstance(val_size, int | float):
        raise refusal("data.val_size", val_size, accepted)
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            count = f"; a count is an integer: {int(val_size)}" if val_size.is_integer() else ""
            raise ValueError(
                f"data.val_size must be {accepted}, got {val_size!r} (a float is a fraction{count})"
            )
        count = round(val_size * n_train)
    else:
        count = int(val_size)
    if count < 0:
        raise refusal("data.val_size", val_size, accepted)
    if count >= n_train:
        raise ValueError(
            f"data.val_size={val_size!r} holds out {count} of the {n_train} training examples, "
            f"leaving none to train on (accepted: 0 <= val_size < {n_train}, or a fraction in "
            "(0, 1))"
        )
    return count


def check_data(node: Mapping[str, Any]) -> None:
    """What can be checked before anything is read: the function and its keywords."""
    check_keywords("data", node, DATA_META)


def load_dataset(node: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> ImageDataset:
    """Call the data config's function and check what it returns.

    A ``root`` argument (a folder or file the function reads) is taken relative to ``base_dir``,
    and so is a ``cache`` argument given as a path (where ``image_folder`` keeps decoded images).
    Raises TargetError (a ValueError) for a broken config or contract, DatasetUnavailable when the
    data cannot be had.
    """
    check_data(node)
    path = node["_target_"]
    for key in ("root", "cache"):
        value = node.get(key)
        if value is None or (key == "cache" and not isinstance(value, str | os.PathLike)):
            continue
        where = Path(value).expanduser()
        node = {**node, key: str(where if where.is_absolute() else Path(base_dir) / where)}
    dataset = build("data", node, DATA_META, passthrough=(DatasetUnavailable,))
    if not isinstance(dataset, ImageDataset):
        raise TargetError(
            f"data._target_={path!r} returned a {type(dataset).__name__}, not a "
            "drsom.data.ImageDataset (see its docstring for the contract)"
        )
    try:
        return dataset.check(path)
    except ValueError as exc:
        raise TargetError(str(exc)) from None


# The names the fingerprint hashes the arrays under (kept: they are in every stored run's summary).
_FINGERPRINT_KEYS = (
    ("train_images", "train_images"),
    ("train_targets", "train_labels"),
    ("test_images", "test_images"),
    ("test_targets", "test_labels"),
)
_VAL_KEYS = (("val_images", "val_images"), ("val_targets", "val_labels"))


def fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """``<train>+<test>:<sha256[:12]>`` of the images and labels as read (after ``val_size`` and
    ``train_subset``; the validation split, when there is one, is hashed too): two runs on the
    same data have the same one wherever the files lie; a 200-image copy of CIFAR-10 and the real
    one never do."""
    digest = hashlib.sha256()
    fields = _FINGERPRINT_KEYS + (_VAL_KEYS if "val_images" in tensors else ())
    for key, field in fields:
        t = tensors[field].contiguous()
        digest.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.numpy().tobytes())
    n_train, n_test = len(tensors["train_images"]), len(tensors["test_images"])
    return f"{n_train}+{n_test}:{digest.hexdigest()[:12]}"


def _check_positive(label: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
        raise refusal(label, value, "a positive integer")


def split_indices(
    n_train: int, n_test: int, val_size: int | float | None, train_subset: int | None
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Which of the ``n_train`` training examples each split reads (``build_data`` says how).

    Returns the kept training examples (None: all of them, in order), the held-out validation
    examples, and the train-eval examples as positions among the kept ones; each sorted.
    """
    n_val = validation_count(val_size, n_train)
    order = np.random.RandomState(SUBSET_SEED).permutation(n_train)
    pool, held_out = order[: n_train - n_val], order[n_train - n_val :]
    if train_subset is not None:
        if train_subset > len(pool):
            left = f" ({n_val} held out for validation)" if n_val else ""
            raise ValueError(
                f"data.train_subset={train_subset} exceeds the {len(pool)} training examples{left}"
            )
        pool = pool[:train_subset]
    keep = torch.from_numpy(np.sort(pool)) if n_val or train_subset is not None else None
    n_kept = len(pool)
    n_eval = min(n_test, n_kept)
    in_eval = np.sort(np.random.RandomState(TRAIN_EVAL_SEED).permutation(n_kept)[:n_eval])
    return keep, torch.from_numpy(np.sort(held_out)), torch.from_numpy(in_eval)


def build_data(
    dataset: ImageDataset,
    *,
    train_subset: int | None = None,
    val_size: int | float | None = 0,
    augment: bool = True,
    batch_size: int = 128,
    test_batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    gpu_resident: bool | None = None,
    num_workers: int = 0,
    channels_last: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> DataBundle:
    """Wrap the splits of ``dataset`` in epoch loaders: train, validation, test and train-eval.

    - ``val_size`` (see ``validation_count``) holds out the *last* examples of a fixed
      permutation of the training set as the validation split: the same examples whatever
      ``train_subset`` and the run's seed (0: none, and the permutation's order is as before).
    - ``train_subset=N`` keeps the first N examples of that permutation (of those not held out).
    - ``train_eval``: min(test size, training size) training examples of another fixed
      permutation, unaugmented, for the evaluation-mode train metric (``train_eval_acc``).
    - ``augment``: random crop of the image padded by 4, and a horizontal flip where the dataset
      allows it (``dataset.flip``; not for digits).
    - ``test_batch_size`` defaults to ``batch_size``.
    - ``gpu_resident``: keep the whole dataset on ``device`` and augment there; ``None`` means "yes
      when ``device`` is CUDA". True with a CPU device runs the same code on host tensors.
    - ``num_workers``: threads preparing batches ahead on the host path (0: in the calling thread).
    - ``channels_last``: inputs come out NCHW with channels_last strides (no extra copy).
    - ``shard``: (rank, processes) of a data-parallel run: every loader yields this process's
      shard of each global batch (``EpochLoader``).

    Raises ValueError for bad arguments.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("test_batch_size", test_batch_size)
    _check_positive("train_subset", train_subset)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")

    keep, held_out, in_eval = split_indices(
        len(dataset.train_images), len(dataset.test_images), val_size, train_subset
    )
    images, labels = dataset.train_images, dataset.train_labels
    if keep is not None:
        images, labels = images[keep], labels[keep]
    val_images, val_labels = dataset.train_images[held_out], dataset.train_labels[held_out]
    n_val = len(held_out)

    arrays = {
        "train_images": images,
        "train_labels": labels,
        "test_images": dataset.test_images,
        "test_labels": dataset.test_labels,
    }
    if n_val:
        arrays |= {"val_images": val_images, "val_labels": val_labels}
    read = fingerprint(arrays)
    device = torch.device(device)
    resident = device.type == "cuda" if gpu_resident is None else bool(gpu_resident)
    storage = device if resident else torch.device("cpu")
    common = dict(
        mean=dataset.mean,
        std=dataset.std,
        device=device,
        channels_last=channels_last,
        shard=shard,
    )
    train = EpochLoader(
        images.to(storage),
        labels.to(storage),
        batch_size=batch_size,
        shuffle=True,
        crop_padding=CROP_PADDING if augment else 0,
        flip=dataset.flip and augment,
        seed=seed,
        num_workers=num_workers,
        **common,
    )

    def evaluation(x: torch.Tensor, y: torch.Tensor) -> EpochLoader:
        size = test_batch_size or batch_size
        return EpochLoader(x.to(storage), y.to(storage), batch_size=size, **common)

    return DataBundle(
        train,
        evaluation(dataset.test_images, dataset.test_labels),
        dataset.num_classes,
        len(images),
        len(dataset.test_images),
        read,
        dataset.input_shape,
        val=evaluation(val_images, val_labels) if n_val else None,
        train_eval=evaluation(images[in_eval], labels[in_eval]),
        num_val=n_val,
        classes=tuple(dataset.classes) if dataset.classes is not None else None,
    )


__all__ = [
    "DATA_DEFAULTS",
    "DATA_META",
    "DataBundle",
    "ImageDataset",
    "DatasetUnavailable",
    "EpochLoader",
    "build_data",
    "check_data",
    "epoch_seed",
    "load_dataset",
    "validation_count",
]
