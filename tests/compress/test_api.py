"""The entry points: in-place vs copy, names kept, fast weights compressed, projection, order, filters."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fewbit.compress import compress, compress_, compressed_names, project_params
from fewbit.errors import ConfigError


def test_compress_keeps_parameter_names_and_adds_only_cq_children(mlp) -> None:
    before = {n for n, _ in mlp.named_parameters()}
    model = compress(mlp, "prune:0.5,quant:w4a8:lsq")
    after = {n for n, _ in model.named_parameters()}
    assert before <= after
    extra = (after - before) | {n for n, _ in model.named_buffers()}
    assert extra and all(any(p.startswith("cq_") for p in n.split(".")) for n in extra)
    assert set(compressed_names(model)) == extra
    assert "features.1.cq_weight.step" in after and "features.1.cq_mask.mask" in extra
    assert "features.1.cq_act.scale" in after


def test_compress_is_pure_and_compress_is_in_place(mlp) -> None:
    weight = mlp.head.weight.detach().clone()
    compress(mlp, "prune:0.5")
    assert type(mlp.head) is torch.nn.Linear and torch.equal(mlp.head.weight, weight)
    param = mlp.head.weight
    assert compress_(mlp, "prune:0.5") is mlp
    assert type(mlp.head).__name__ == "CompressedLinear" and mlp.head.weight is param  # same parameter object


def test_functional_call_compresses_fast_weights(mlp) -> None:
    model = compress(mlp, "quant:w2:per_tensor")
    params = {n: p for n, p in model.named_parameters()}
    fast = {n: p + 0.37 * torch.randn_like(p) for n, p in params.items()}
    x = torch.randn(4, 64)
    out = functional_call(model, fast, (x,))
    projected = project_params(model, fast)
    w = projected["head.weight"]
    assert w.unique().numel() <= 4  # the adapted head weight is on a 2-bit grid
    reference = torch.nn.functional.linear(
        torch.relu(
            torch.nn.functional.linear(
                torch.relu(
                    torch.nn.functional.linear(x, projected["features.1.weight"], fast["features.1.bias"])
                ),
                projected["features.3.weight"],
                fast["features.3.bias"],
            )
        ),
        w,
        fast["head.bias"],
    )
    assert torch.allclose(out, reference, atol=1e-5)


def test_project_params_is_differentiable_and_handles_a_tasks_dimension(mlp) -> None:
    model = compress(mlp, "prune:0.5,quant:w3")
    w = model.features[1].weight.detach().unsqueeze(0).repeat(3, 1, 1).requires_grad_()  # [tasks, out, in]
    out = project_params(model, {"features.1.weight": w, "other": torch.ones(2)})
    assert out["other"].shape == (2,)
    projected = out["features.1.weight"]
    mask = model.features[1].cq_mask.mask
    assert torch.all(projected[:, mask == 0] == 0)
    for task in projected:
        assert all(row.unique().numel() <= 8 for row in task)
    projected.sum().backward()
    assert torch.equal(w.grad, mask.expand_as(w))  # straight through, zero where pruned


def test_composition_order_is_respected(mlp) -> None:
    x = torch.randn(8, 64)
    a = compress(mlp, "prune:0.5,quant:w2")
    b = compress(mlp, "quant:w2,prune:0.5")
    assert a.head.cq_order == ["cq_mask", "cq_weight"] and b.head.cq_order == ["cq_weight", "cq_mask"]
    # prune first: magnitude ranking of float weights; quantize first: ranking of 2-bit values
    assert not torch.equal(a.head.cq_mask.mask, b.head.cq_mask.mask)
    assert not torch.allclose(a(x), b(x))


def test_a_filter_matching_no_layer_is_an_error(mlp) -> None:
    with pytest.raises(ConfigError, match="matches no Linear/Conv2d"):
        compress(mlp, "quant:w4", filter_fn=lambda module, name: name.startswith("nothing"))
    with pytest.raises(ConfigError, match=r"spec\[1\] \(prune with layers=\['body\.\*'\]\)"):
        compress(mlp, "quant:w4,prune:0.5@body.*")


def test_filter_fn_picks_layers(mlp) -> None:
    model = compress(mlp, "quant:w4", filter_fn=lambda module, name: name == "head")
    assert type(model.features[1]) is torch.nn.Linear and hasattr(model.head, "cq_weight")
    model = compress(mlp, "quant:w4@features.*")
    assert type(model.head) is torch.nn.Linear and hasattr(model.features[3], "cq_weight")


def test_one_value_method_per_layer(mlp) -> None:
    with pytest.raises(ConfigError, match="layer features.1 is already quantized or clustered"):
        compress(mlp, "quant:w4,cluster:4")
