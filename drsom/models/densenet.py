"""DenseNet-121 (growth rate 32, compression 0.5) for 32x32 inputs, as in the AdaBelief experiments.

The ImageNet stem (7x7 stride-2 conv and max-pool) is replaced by one 3x3 stride-1 conv with
2 * growth output channels, so the dense blocks run at 32, 16, 8 and 4 pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 conv to 4*growth, BN-ReLU-3x3 conv to growth.

    Its output is concatenated onto its input, which is what makes the block "dense".
    """

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(F.relu(self.bn1(x)))
        new = self.conv2(F.relu(self.bn2(new)))
        return torch.cat([new, x], dim=1)


class Transition(nn.Module):
    """Between blocks: compress channels with a 1x1 conv and halve the resolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class CifarDenseNet(nn.Module):
    def __init__(
        self,
        layers_per_block: tuple[int, ...],
        growth: int = 32,
        compression: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        channels = 2 * growth
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i, n_layers in enumerate(layers_per_block):
            for _ in range(n_layers):
                stages.append(DenseLayer(channels, growth))
                channels += growth
            if i < len(layers_per_block) - 1:
                reduced = int(math.floor(channels * compression))
                stages.append(Transition(channels, reduced))
                channels = reduced
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.stem(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def densenet121(num_classes: int = 10, in_channels: int = 3, growth: int = 32) -> CifarDenseNet:
    return CifarDenseNet((6, 12, 24, 16), growth, num_classes=num_classes, in_channels=in_channels)
