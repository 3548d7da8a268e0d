"""Backbones (mlp, conv4, conv1d, resnet12) usable with `torch.func.functional_call`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fewbit.errors import ConfigError
from fewbit.models.backbone import Backbone
from fewbit.models.conv1d import conv1d
from fewbit.models.conv4 import conv4
from fewbit.models.layers import BatchNorm
from fewbit.models.mlp import mlp
from fewbit.models.resnet12 import resnet12

BACKBONES = ("mlp", "conv4", "conv1d", "resnet12")
Shape = tuple[int, ...]


def _mlp(ways: int, shape: Shape, **options: Any) -> Backbone:
    in_features = options.pop("in_features", math.prod(shape))
    return mlp(ways=ways, in_features=in_features, **options)


def _square(name: str, shape: Shape) -> tuple[int, int]:
    if len(shape) != 3 or shape[1] != shape[2]:
        hint = "; for series (C x 1 x L) use the conv1d backbone" if len(shape) == 3 and shape[1] == 1 else ""
        raise ConfigError(f"backbone: {name} takes square images C x N x N, got inputs {list(shape)}{hint}")
    return shape[0], shape[1]


def _conv4(ways: int, shape: Shape, **options: Any) -> Backbone:
    channels, size = _square("conv4", shape)
    return conv4(ways=ways, in_channels=channels, image_size=size, **options)


def _resnet12(ways: int, shape: Shape, **options: Any) -> Backbone:
    channels, size = _square("resnet12", shape)
    return resnet12(ways=ways, in_channels=channels, image_size=size, **options)


def _conv1d(ways: int, shape: Shape, **options: Any) -> Backbone:
    if len(shape) != 3 or shape[1] != 1:
        raise ConfigError(f"backbone: conv1d takes series C x 1 x L (one row per channel), got inputs {list(shape)}")
    return conv1d(ways=ways, in_channels=shape[0], length=shape[2], **options)


_BUILDERS: dict[str, Callable[..., Backbone]] = {"mlp": _mlp, "conv4": _conv4, "conv1d": _conv1d, "resnet12": _resnet12}


def build_backbone(name: str, *, ways: int, in_channels: int = 1, image_size: int = 28,
                   input_shape: Shape | None = None, **options: Any) -> Backbone:
    """The backbone `name` (mlp, conv4, conv1d, resnet12) with a `ways`-class head, for inputs of
    `input_shape` (`(C, H, W)`; series `(C, 1, L)`; default: `in_channels` x `image_size` squares).

        >>> model = build_backbone("conv1d", ways=5, input_shape=(3, 1, 128))
    """
    if name not in _BUILDERS:
        raise ConfigError(f"backbone: unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if ways < 0:
        raise ConfigError(f"backbone.ways: must be >= 0, got {ways}")
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else (in_channels, image_size, image_size)
    return _BUILDERS[name](ways, shape, **options)


__all__ = ["BACKBONES", "Backbone", "BatchNorm", "build_backbone", "conv1d", "conv4", "mlp", "resnet12"]
