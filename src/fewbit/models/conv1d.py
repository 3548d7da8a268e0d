"""Conv-4 for signals: 4 x [conv k=3 64, BatchNorm, ReLU, maxpool 2] over time; C x L -> 64 x L/16.

A series of C channels and L steps is a one-row image `[C, 1, L]` everywhere in fewbit (data,
runtime, C export), so this backbone's layers are `Conv2d` with `1 x 3` kernels and `1 x 2`
max-pools: the 1-D Conv-4 of the time-series few-shot literature, computed by the same layers
every compression method, the functional inner loop, the numpy runtime, ONNX and the C kernels
already handle.
"""

from __future__ import annotations

import torch
from torch import nn

from fewbit.errors import ConfigError
from fewbit.models.backbone import Backbone
from fewbit.models.layers import BatchNorm

KERNEL = 3


def conv1d_block(cin: int, cout: int) -> nn.Sequential:
    """conv k=3 over time (padding 1), batch-statistics BatchNorm, ReLU, max-pool 2 over time."""
    return nn.Sequential(nn.Conv2d(cin, cout, (1, KERNEL), padding=(0, 1)), BatchNorm(cout), nn.ReLU(),
                         nn.MaxPool2d((1, 2)))


def conv1d(*, ways: int, in_channels: int = 1, length: int = 128, width: int = 64, depth: int = 4) -> Backbone:
    """The 1-D Conv-4 over series of `in_channels` channels and `length` steps (inputs `[N, C, 1, L]`)."""
    if length < 2**depth:
        raise ConfigError(f"conv1d: a series of {length} steps is pooled away by {depth} blocks; "
                          f"use a length of at least {2**depth}")
    features = nn.Sequential(*(conv1d_block(in_channels if i == 0 else width, width) for i in range(depth)))
    with torch.no_grad():
        dim = features(torch.zeros(2, in_channels, 1, length)).flatten(1).shape[1]
    return Backbone(features, dim, ways, "conv1d")
