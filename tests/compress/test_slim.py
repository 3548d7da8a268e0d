"""Slimming: the smaller dense model computes what the channel-masked one did."""

from __future__ import annotations

import pytest
import torch

from fewbit.compress import compress, size_report, slim
from fewbit.errors import ConfigError
from fewbit.models import build_backbone


@pytest.mark.parametrize(
    "spec", ["prune:channel:0.5@features.*", "prune:channel:0.25:l2@features.*,quant:w4"]
)
def test_slim_mlp_equals_masked(mlp, spec: str) -> None:
    model = compress(mlp, spec)
    small = slim(model)
    x = torch.rand(16, 64)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert small.features[1].weight.shape[0] < 128 and small.head.weight.shape == (
        10,
        small.features[3].out_features,
    )
    assert size_report(small).params < size_report(model).params


def test_slim_conv4_follows_batchnorm_and_flatten(conv4) -> None:
    model = compress(conv4, "prune:channel:0.5")  # the head too: its outputs are kept (they are the logits)
    small = slim(model)
    x = torch.randn(6, 1, 28, 28)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    assert small.features[0][0].out_channels == 8 and small.features[1][0].in_channels == 8
    assert small.features[0][1].weight.shape == (8,)
    assert small.head.weight.shape == (5, 8)
    assert type(small.features[0][0]) is torch.nn.Conv2d  # nothing left to compress: plain again


def test_slim_conv4_with_wider_flatten() -> None:
    torch.manual_seed(0)
    model = compress(build_backbone("conv4", ways=3, width=8, image_size=44), "prune:channel:0.5@features.*")
    small = slim(model)
    x = torch.randn(4, 1, 44, 44)
    assert model.head.in_features == 8 * 4 and small.head.in_features == 4 * 4
    assert torch.allclose(small(x), model(x), atol=1e-5)


def test_slim_cannot_follow_a_residual_block() -> None:
    torch.manual_seed(0)
    model = compress(
        build_backbone("resnet12", ways=5, channels=(4, 4, 4, 4)), "prune:channel:0.5@features.0.conv1"
    )
    with pytest.raises(ConfigError, match=r"slim: layer features\.0\.conv1 .*ResidualStage"):
        slim(model)
