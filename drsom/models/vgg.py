"""VGG-11 with BatchNorm for 32x32 inputs, as in the AdaBelief CIFAR experiments.

Five max-pools reduce 32x32 to 1x1, so the classifier is a single 512 -> num_classes layer instead
of the ImageNet model's three large fully connected layers.
"""

from __future__ import annotations

import torch
from torch import nn

# Channel widths of the conv layers; "M" marks a 2x2 max-pool.
VGG11_LAYOUT: tuple[int | str, ...] = (
    64,
    "M",
    128,
    "M",
    256,
    256,
    "M",
    512,
    512,
    "M",
    512,
    512,
    "M",
)


class CifarVGG(nn.Module):
    def __init__(
        self, layout: tuple[int | str, ...], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = int(item)
            # Keep the conv bias (as the reference CIFAR code does) so parameter counts match it.
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg11(num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    """VGG-11 for 32x32 inputs (five max-pools leave 1x1 for the linear classifier)."""
    return CifarVGG(VGG11_LAYOUT, num_classes, in_channels)
