"""A user-defined dataset for the DRSOM suite: oriented stripes, 4 classes, 1 channel.

The suite calls ``stripes(**kwargs)`` and checks what it returns against the
``drsom.data.ImageDataset`` contract: uint8 images (N, H, W, C) with C in {1, 3}, integer labels
in [0, num_classes), the same image shape in both splits.
"""

import math

import torch

from drsom.data import ImageDataset


def stripes(n_train: int = 600, n_test: int = 200, size: int = 16, seed: int = 0) -> ImageDataset:
    """Noisy sine gratings at 0, 45, 90 or 135 degrees; the class is the orientation."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.randint(0, 4, (n,), generator=g)
    angle = labels.double() * math.pi / 4
    phase = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    along = xs[None] * torch.cos(angle)[:, None, None] + ys[None] * torch.sin(angle)[:, None, None]
    wave = torch.sin(2 * math.pi * along / 4 + phase[:, None, None])
    noisy = wave + 1.5 * torch.randn(n, size, size, generator=g, dtype=torch.float64)
    images = ((noisy.clamp(-2, 2) + 2) / 4 * 255).round().to(torch.uint8)[..., None]
    return ImageDataset(
        train_images=images[:n_train],
        train_labels=labels[:n_train],
        test_images=images[n_train:],
        test_labels=labels[n_train:],
        num_classes=4,
        flip=False,  # a flipped 45-degree grating is a 135-degree one: another class
    )
