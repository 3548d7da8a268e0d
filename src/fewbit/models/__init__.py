"""Backbones (mlp, conv4, resnet12) usable with `torch.func.functional_call`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fewbit.errors import ConfigError
from fewbit.models.backbone import Backbone
from fewbit.models.conv4 import conv4
from fewbit.models.layers import BatchNorm
from fewbit.models.mlp import mlp
from fewbit.models.resnet12 import resnet12

BACKBONES = ("mlp", "conv4", "resnet12")


def _mlp(ways: int, in_channels: int, image_size: int, **options: Any) -> Backbone:
    in_features = options.pop("in_features", in_channels * image_size * image_size)
    return mlp(ways=ways, in_features=in_features, **options)


_BUILDERS: dict[str, Callable[..., Backbone]] = {
    "mlp": _mlp,
    "conv4": lambda ways, in_channels, image_size, **o: conv4(
        ways=ways, in_channels=in_channels, image_size=image_size, **o
    ),
    "resnet12": lambda ways, in_channels, image_size, **o: resnet12(
        ways=ways, in_channels=in_channels, image_size=image_size, **o
    ),
}


def build_backbone(name: str, *, ways: int, in_channels: int = 1, image_size: int = 28, **options: Any) -> Backbone:
    """The backbone `name` (mlp, conv4, resnet12) with a `ways`-class head."""
    if name not in _BUILDERS:
        raise ConfigError(f"backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if ways < 0:
        raise ConfigError(f"backbone.ways: must be >= 0, got {ways}")
    return _BUILDERS[name](ways, in_channels, image_size, **options)


__all__ = ["BACKBONES", "Backbone", "BatchNorm", "build_backbone", "conv4", "mlp", "resnet12"]
