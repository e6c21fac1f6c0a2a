"""A small CNN for quick runs on a CPU.

Three conv blocks (conv, BatchNorm, ReLU, 2x2 max-pool) take 32x32 to 4x4 (other input sizes are
pooled to 4x4), then a two-layer classifier. BatchNorm and one Dropout are there on purpose: an
optimizer that evaluates the loss several times per step must keep BatchNorm running statistics and
dropout masks consistent, and this model is the cheap place to check that it does.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        # bias is redundant in front of BatchNorm, whose shift plays the same role
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            _conv_block(in_channels, c1),
            _conv_block(c1, c2),
            _conv_block(c2, c3),
            # 32x32 inputs are 4x4 here already (then this is the identity); other sizes become so
            nn.AdaptiveAvgPool2d(4),
        )
        # BatchNorm stays in the conv blocks only: a BatchNorm1d in the head would fail in training
        # mode on a last partial batch of one example.
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * 4 * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
