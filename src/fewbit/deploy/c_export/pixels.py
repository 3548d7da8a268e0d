"""uint8 images and the float32 input the runtime takes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.errors import ConfigError
from fewbit.runtime.preprocess import ImagePreprocessing


def pixels_to_input(pixels: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """uint8 images `[N, C, H, W]` as the float32 input the runtime takes: the artifact's own
    `ImagePreprocessing.normalize` (scale to [0, 1], then (x - mean) / std)."""
    return _rule(preprocessing).normalize(np.asarray(pixels, np.uint8))


def _rule(preprocessing: Mapping[str, Any]) -> ImagePreprocessing:
    try:
        return ImagePreprocessing.from_dict(preprocessing)
    except ValueError as exc:
        raise ConfigError(f"C export: {exc}") from None


def input_to_pixels(x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """The uint8 images whose `pixels_to_input` is `x` (ValueError when `x` did not come from pixels)."""
    x = np.asarray(x, np.float32)
    rule = _rule(preprocessing)
    mean = np.asarray(rule.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(rule.std, np.float32).reshape(1, -1, 1, 1)
    pixels = np.rint((x * std + mean) * 255.0)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if not np.array_equal(pixels_to_input(pixels, preprocessing), x):
        raise ValueError("these images are not 8-bit pixels under the artifact's preprocessing")
    return pixels

