"""Tiny models and tasks for the meta-learning tests (float64 where gradients are compared)."""

from __future__ import annotations

import pytest
import torch

from fewbit.data.task import Task
from fewbit.models import build_backbone


def make_task(
    tasks: int, ways: int, shots: int, queries: int, size: int = 8, dtype=torch.float64, seed: int = 0
) -> Task:
    """Random images with class-dependent means, labels 0..ways-1."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(tasks, ways, 1, size, size, generator=g, dtype=dtype)

    def draw(per: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(ways).repeat_interleave(per)
        x = centers[:, y] + 0.5 * torch.randn(tasks, ways * per, 1, size, size, generator=g, dtype=dtype)
        return x, y.expand(tasks, -1).clone()

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return Task(sx, sy, qx, qy, ways)


def tiny_conv(ways: int = 3, seed: int = 0, dtype=torch.float64, width: int = 3) -> torch.nn.Module:
    """A Conv-4 with `width` channels on 16x16 images (BatchNorm included)."""
    torch.manual_seed(seed)
    return build_backbone("conv4", ways=ways, image_size=16, width=width).to(dtype)


def tiny_resnet(ways: int = 3, seed: int = 0, dtype=torch.float64) -> torch.nn.Module:
    """A ResNet-12 with 2 channels per stage: not foldable, so it takes the vmap path."""
    torch.manual_seed(seed)
    return build_backbone("resnet12", ways=ways, image_size=16, channels=(2, 2, 2, 2)).to(dtype)


@pytest.fixture
def conv_model() -> torch.nn.Module:
    return tiny_conv()


@pytest.fixture
def conv_task() -> Task:
    return make_task(tasks=3, ways=3, shots=2, queries=2, size=16)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids OpenMP contention (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
