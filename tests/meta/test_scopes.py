"""Scopes pick the right parameters and never the compression-owned `cq_` ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewbit.errors import ConfigError
from fewbit.meta import scope_filter

from .conftest import tiny_conv


def names(scope: str, model: nn.Module, with_model: bool = True) -> set[str]:
    keep = scope_filter(scope, model if with_model else None)
    return {n for n, _ in model.named_parameters() if keep(n)}


def test_scopes_on_conv4() -> None:
    model = tiny_conv()
    every = {n for n, _ in model.named_parameters()}
    assert names("all", model) == every
    assert names("head", model) == {"head.weight", "head.bias"}
    assert names("none", model) == set()
    bias_norm = {f"features.{i}.0.bias" for i in range(4)}  # conv biases
    bias_norm |= {f"features.{i}.1.{k}" for i in range(4) for k in ("weight", "bias")}  # BatchNorm
    bias_norm |= {"head.bias"}
    assert names("bias_norm", model) == bias_norm


def test_bias_norm_without_a_model_uses_module_names() -> None:
    keep = scope_filter("bias_norm")
    assert keep("stage.bn1.weight") and keep("conv.bias") and not keep("conv.weight")


def test_compression_params_never_adapt() -> None:
    model = tiny_conv()
    model.features[0][0].cq_weight = nn.Module()
    model.features[0][0].cq_weight.step = nn.Parameter(torch.ones(()))
    model.features[0][0].cq_weight.bias = nn.Parameter(torch.ones(()))
    assert "features.0.0.cq_weight.step" in dict(model.named_parameters())
    for scope in ("all", "head", "bias_norm", "none"):
        assert not any(n.split(".")[3].startswith("cq_") for n in names(scope, model) if n.count(".") >= 3)
        assert "features.0.0.cq_weight.bias" not in names(scope, model)


def test_unknown_scope_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scope"):
        scope_filter("everything")
