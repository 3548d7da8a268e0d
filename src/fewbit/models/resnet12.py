"""A small ResNet-12: 4 residual stages of 3 conv3x3 each, max-pooled, global average at the end."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fewbit.models.backbone import Backbone
from fewbit.models.layers import BatchNorm


class ResidualStage(nn.Module):
    """Three conv3x3-BatchNorm layers with LeakyReLU, a 1x1 shortcut, then 2x2 max-pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = BatchNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = BatchNorm(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn3 = BatchNorm(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_shortcut = BatchNorm(cout)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def branches(self) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]], list[tuple[str, nn.Module]]]:
        """(main branch, shortcut branch, what follows their sum) as (name, layer) lists, in the order
        `forward` runs them: how an exporter writes the stage out layer by layer."""
        main = [("conv1", self.conv1), ("bn1", self.bn1), ("act", self.act), ("conv2", self.conv2),
                ("bn2", self.bn2), ("act", self.act), ("conv3", self.conv3), ("bn3", self.bn3)]
        return main, [("shortcut", self.shortcut), ("bn_shortcut", self.bn_shortcut)], [("act", self.act),
                                                                                          ("pool", self.pool)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.bn_shortcut(self.shortcut(x))))


def resnet12(
    *, ways: int, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (32, 64, 128, 256)
) -> Backbone:
    """ResNet-12 with the given stage widths (small by default for CPU few-shot work)."""
    stages: list[nn.Module] = []
    cin = in_channels
    for c in channels:
        stages.append(ResidualStage(cin, c))
        cin = c
    features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1))
    return Backbone(features, cin, ways, "resnet12")
