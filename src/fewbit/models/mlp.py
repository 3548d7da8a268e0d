"""The classic MLP: flatten, hidden ReLU layers (128-64 by default), linear head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fewbit.models.backbone import Backbone
from fewbit.models.layers import Flatten


def mlp(*, ways: int, in_features: int, hidden: Sequence[int] = (128, 64)) -> Backbone:
    """MLP `in_features -> hidden... -> ways` with ReLU between layers."""
    layers: list[nn.Module] = [Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return Backbone(nn.Sequential(*layers), width, ways, "mlp")
