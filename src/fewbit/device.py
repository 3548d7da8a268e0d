"""Resolve the `--device auto|cpu|cuda` choice."""

from __future__ import annotations

import torch

from fewbit.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for `auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device: CUDA was asked for but this machine has none; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"device: unknown device {name!r}; choose one of auto, cpu, cuda")
