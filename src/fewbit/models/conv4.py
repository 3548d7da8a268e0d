"""Conv-4: 4 x [conv3x3 64, BatchNorm, ReLU, maxpool2]; 28x28 -> 64 features."""

from __future__ import annotations

import torch
from torch import nn

from fewbit.models.backbone import Backbone
from fewbit.models.layers import BatchNorm


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 (padding 1), batch-statistics BatchNorm, ReLU, 2x2 max-pool."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), BatchNorm(cout), nn.ReLU(), nn.MaxPool2d(2))


def conv4(*, ways: int, in_channels: int = 1, image_size: int = 28, width: int = 64) -> Backbone:
    """The Conv-4 of MAML and Prototypical Networks."""
    features = nn.Sequential(*(conv_block(in_channels if i == 0 else width, width) for i in range(4)))
    with torch.no_grad():
        dim = features(torch.zeros(2, in_channels, image_size, image_size)).flatten(1).shape[1]
    return Backbone(features, dim, ways, "conv4")
