"""What a dataset function returns: ``ImageDataset``, the contract between a dataset and the suite.

A data config names a function by import path (``_target_``) with its keyword arguments; the
suite calls it once per run and checks the result here before anything trains::

    _target_: my_package.my_data   # def my_data(**kwargs) -> ImageDataset
    name: mydata                   # the suite's own keys (DATA_META): never passed on
    val_size: 0.1
    train_subset: null

The contract (``check`` enforces it, one line per violation, naming the function):

* ``train_images``, ``test_images``: ``torch.uint8`` tensors ``(N, H, W, C)``, C in {1, 3}, the
  same H, W, C in both splits (the suite crops, flips and normalises them; see ``loader``);
* ``train_labels``, ``test_labels``: integer tensors ``(N,)``, values in ``[0, num_classes)``;
* ``num_classes``: a positive integer; ``mean``, ``std``: C values each, of pixels in [0, 1]
  (``None``: computed from the training images);
* ``flip``: whether a horizontal flip keeps an image's label (an augmentation when true);
* ``classes``: optionally, the name of each label (``classes[i]`` for label i), for tables and
  figures.

The model sees inputs of shape ``input_shape = (C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# The suite's own keys of a data config: ``name`` (run ids; default: the function's name),
# ``display`` (figures and tables), and how the suite uses what the function returns.
DATA_META: tuple[str, ...] = (
    "name",
    "display",
    "val_size",
    "train_subset",
    "augment",
    "num_workers",
)
# What a data config that leaves them out gets (``drsom.store.identity.complete`` fills them in): a
# tenth of the training split held out for validation, as the suite's own datasets do.
DATA_DEFAULTS = {"val_size": 0.1, "train_subset": None, "augment": True, "num_workers": 0}


@dataclass
class ImageDataset:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    flip: bool = False
    classes: Sequence[str] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, h, w, c = self.train_images.shape
        return (int(c), int(h), int(w))

    def check(self, source: str) -> ImageDataset:
        """Raise ValueError (one line naming ``source``) if the contract above is broken; fill
        in ``mean`` and ``std`` when they are None. Returns self."""

        def bad(what: str) -> ValueError:
            return ValueError(f"data ({source}): {what}")

        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise bad(f"num_classes must be a positive integer, got {self.num_classes!r}")
        shape = None
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
                kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
                raise bad(f"{split}_images must be a torch.uint8 tensor, got {kind}")
            if images.dim() != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
                raise bad(
                    f"{split}_images must have shape (N, H, W, C) with N >= 1 and C in {{1, 3}}, "
                    f"got {tuple(images.shape)}"
                )
            if shape is not None and tuple(images.shape[1:]) != shape:
                raise bad(
                    f"test_images are {tuple(images.shape[1:])} (H, W, C) but train_images are "
                    f"{shape}"
                )
            shape = tuple(images.shape[1:])
            if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
                raise bad(f"{split}_labels must be an integer tensor")
            if tuple(labels.shape) != (len(images),):
                raise bad(
                    f"{split}_labels must have shape ({len(images)},), one per image, got "
                    f"{tuple(labels.shape)}"
                )
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_classes:
                raise bad(
                    f"{split}_labels lie in [{low}, {high}], outside [0, num_classes="
                    f"{self.num_classes})"
                )
            setattr(self, f"{split}_labels", labels.to(torch.int64))
        channels = self.input_shape[0]
        if self.mean is None or self.std is None:
            # only then: a float64 copy of CIFAR-10's training split is 1.2 GB
            pixels = self.train_images.double() / 255.0
            if self.mean is None:
                self.mean = tuple(pixels.mean(dim=(0, 1, 2)).tolist())
            if self.std is None:
                self.std = tuple(pixels.std(dim=(0, 1, 2)).clamp_min(1e-6).tolist())
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != channels:
                raise bad(f"{key} must have {channels} values (one per channel), got {len(value)}")
        if min(self.std) <= 0:
            raise bad(f"std must be positive, got {tuple(self.std)}")
        if self.classes is not None:
            if len(self.classes) != self.num_classes:
                raise bad(
                    f"classes must name the {self.num_classes} classes, got {len(self.classes)} "
                    "names"
                )
            self.classes = tuple(str(c) for c in self.classes)
        return self
