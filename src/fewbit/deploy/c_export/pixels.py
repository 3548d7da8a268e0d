"""uint8 images and the float32 input the runtime takes, and the example program's task files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fewbit._io import atomic_write_bytes
from fewbit.errors import ConfigError


def pixels_to_input(pixels: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """uint8 images `[N, C, H, W]` as the float32 input the runtime takes (scale to [0, 1], then
    (x - mean) / std), the arithmetic of `fewbit.runtime.images.preprocess`."""
    pixels = np.asarray(pixels)
    channels = pixels.shape[1]
    mean = np.broadcast_to(np.asarray(preprocessing.get("mean", 0.0), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(preprocessing.get("std", 1.0), np.float32).reshape(-1), (channels,))
    x = pixels.astype(np.float32) / np.float32(255.0)
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def input_to_pixels(x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """The uint8 images whose `pixels_to_input` is `x` (ValueError when `x` did not come from pixels)."""
    x = np.asarray(x, np.float32)
    channels = x.shape[1]
    mean = np.broadcast_to(np.asarray(preprocessing.get("mean", 0.0), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(preprocessing.get("std", 1.0), np.float32).reshape(-1), (channels,))
    pixels = np.rint((x * std[None, :, None, None] + mean[None, :, None, None]) * 255.0)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if not np.array_equal(pixels_to_input(pixels, preprocessing), x):
        raise ValueError("these images are not 8-bit pixels under the artifact's preprocessing")
    return pixels


def write_task_files(
    folder: str | os.PathLike[str],
    support_pixels: np.ndarray,
    support_labels: np.ndarray,
    query_pixels: np.ndarray,
) -> tuple[Path, Path]:
    """The example program's inputs: `support.bin` (label byte + pixels per image) and
    `query.bin` (pixels per image), uint8 channel-major."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(support_labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ConfigError("raw task files: support labels must be 0..255 (one byte each, as the C example reads)")
    support = np.asarray(support_pixels, np.uint8).reshape(len(labels), -1)
    records = np.concatenate([labels.astype(np.uint8)[:, None], support], axis=1)
    atomic_write_bytes(folder / "support.bin", records.tobytes())
    atomic_write_bytes(folder / "query.bin", np.asarray(query_pixels, np.uint8).tobytes())
    return folder / "support.bin", folder / "query.bin"
