"""Small models shared by the compression tests."""

from __future__ import annotations

import pytest
import torch

from fewbit.models import build_backbone


@pytest.fixture
def mlp() -> torch.nn.Module:
    """MLP 64-128-64-10 with a fixed seed."""
    torch.manual_seed(0)
    return build_backbone("mlp", ways=10, in_features=64)


@pytest.fixture
def conv4() -> torch.nn.Module:
    """A narrow Conv-4 (16 channels) on 28x28 inputs, 5 ways."""
    torch.manual_seed(0)
    return build_backbone("conv4", ways=5, width=16)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: extra threads only contend on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
