"""scikit-learn's bundled 8x8 handwritten digits, shaped like CIFAR so every model runs unchanged.

1,797 real images, no download: the offline dataset for CPU demos and machines without CIFAR-10.
Each image is upsampled to 32x32 (bilinear) and repeated to 3 channels. The train/test split is
fixed (it defines the dataset, so it must not move with the run's seed) and stratified.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import ImageDataset
from .errors import DatasetUnavailable

NUM_TEST = 450  # leaves 1,347 for training, the usual 75/25 split
SPLIT_SEED = 0


def _stratified_test_mask(labels: np.ndarray, num_test: int, seed: int) -> np.ndarray:
    # Group examples by class (random order within a class), then take every k-th position with
    # k = n / num_test: exactly num_test picks, and each class gets its proportional share.
    n = len(labels)
    order = np.random.RandomState(seed).permutation(
        n
    )  # legacy stream: frozen across numpy versions
    order = order[np.argsort(labels[order], kind="stable")]
    marks = np.floor(np.arange(n + 1) * num_test / n)
    mask = np.zeros(n, dtype=bool)
    mask[order[np.diff(marks) > 0]] = True
    return mask


def digits() -> ImageDataset:
    """uint8 NHWC 32x32x3 images and int64 labels per split, normalised by the train mean/std."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise DatasetUnavailable(
            "the digits dataset needs scikit-learn: pip install 'drsom[digits]'"
        ) from exc
    bunch = sklearn_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    # Pixel values are counts 0..16; bilinear upsampling is a convex combination, so they stay
    # in range.
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    images = (big * 255.0).round().clamp_(0, 255).to(torch.uint8)
    images = images.permute(0, 2, 3, 1).repeat(1, 1, 1, 3).contiguous()  # N, 32, 32, 3

    test = torch.from_numpy(_stratified_test_mask(labels, NUM_TEST, SPLIT_SEED))
    targets = torch.from_numpy(labels)
    train_images = images[~test]
    # Normalise with the training split's statistics (the 3 channels are copies: one mean, one std).
    pixels = train_images.double() / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())
    return ImageDataset(
        train_images,
        targets[~test],
        images[test],
        targets[test],
        num_classes=10,
        mean=(mean,) * 3,
        std=(std,) * 3,
        flip=False,  # digits are not mirror-invariant (a flipped 3 is no digit; 2 and 5 swap)
    )
