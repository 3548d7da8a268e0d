"""Pruning: exact sparsity per pattern, N:M in every group, masks that survive training, schedules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.compress import PruneConfig, apply_masks_, compress, update_pruning
from fewbit.compress.prune import magnitude_mask
from fewbit.errors import ConfigError


@settings(max_examples=40, deadline=None)
@given(
    sparsity=st.floats(0.0, 0.99), rows=st.integers(1, 12), cols=st.integers(1, 30), seed=st.integers(0, 999)
)
def test_unstructured_sparsity_is_exact(sparsity: float, rows: int, cols: int, seed: int) -> None:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = magnitude_mask(w, sparsity, "unstructured")
    assert int((mask == 0).sum()) == round(sparsity * w.numel())
    if 0 < (mask == 0).sum() < w.numel():  # the pruned are the smallest
        assert w.abs()[mask == 0].max() <= w.abs()[mask == 1].min()


@settings(max_examples=30, deadline=None)
@given(
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 8), (2, 8)]),
    rows=st.integers(1, 8),
    groups=st.integers(1, 5),
    seed=st.integers(0, 999),
)
def test_n_m_holds_in_every_group(nm: tuple[int, int], rows: int, groups: int, seed: int) -> None:
    n, m = nm
    w = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    mask = magnitude_mask(w, 0.0, "nm", n=n, m=m)
    assert torch.all(mask.reshape(rows, groups, m).sum(-1) == n)


def test_channel_pruning_drops_whole_rows_and_their_bias(mlp) -> None:
    model = compress(mlp, "prune:channel:0.25@features.*")
    layer = model.features[1]
    rows = layer.cq_mask.mask.reshape(128, -1)
    dead = rows.amax(1) == 0
    assert int(dead.sum()) == 32 and torch.all(rows[~dead] == 1)
    assert torch.all(layer.bias[dead] == 0)
    out = layer(torch.randn(5, 64))
    assert torch.all(out[:, dead] == 0)


def test_nm_that_does_not_divide_the_layer_names_layer_and_field(conv4) -> None:
    with pytest.raises(ConfigError, match=r"PruneConfig\.m: layer features\.0\.0 .*9 inputs"):
        compress(conv4, "prune:2:4")
    model = compress(conv4, "prune:2:4", filter_fn=lambda m, name: name != "features.0.0")
    w = model.features[1][0].compress_weight(model.features[1][0].weight)
    assert torch.all((w.reshape(16, -1, 4) != 0).sum(-1) <= 2)


@pytest.mark.parametrize(
    "spec", ["prune:0.7", "prune:channel:0.5@features.*,quant:w4", "quant:w2,prune:0.5", "prune:2:4"]
)
def test_pruned_weights_stay_exactly_zero_through_training(mlp, spec: str) -> None:
    model = compress(mlp, spec)
    layers = [m for m in model.modules() if hasattr(m, "cq_mask")]
    masks = [m.cq_mask.mask.clone() for m in layers]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        x, y = torch.randn(16, 64, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for layer, mask in zip(layers, masks):
        assert torch.equal(layer.cq_mask.mask, mask)
        assert torch.all(layer.weight[mask == 0] == 0)  # the raw parameter too
        assert torch.all(layer.compress_weight(layer.weight)[mask == 0] == 0)


def test_polynomial_schedule_grows_masks_monotonically(mlp) -> None:
    config = PruneConfig(sparsity=0.8, schedule="polynomial", begin_step=0, end_step=100, frequency=25)
    model = compress(mlp, config)
    layer = model.features[1]
    assert float((layer.cq_mask.mask == 0).float().mean()) == 0.0
    previous = layer.cq_mask.mask.clone()
    seen = []
    for step in range(0, 101, 25):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight) * 0.01 * layer.cq_mask.mask)
        sparsity = update_pruning(model, step)["features.1"]
        seen.append(sparsity)
        assert torch.all(layer.cq_mask.mask <= previous)  # once pruned, stays pruned
        previous = layer.cq_mask.mask.clone()
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(0.8, abs=1e-3)
    assert config.sparsity_at(50) == pytest.approx(0.8 - 0.8 * 0.5**3)


def test_apply_masks_rezeroes_raw_weights(mlp) -> None:
    model = compress(mlp, "prune:0.5")
    layer = model.head
    with torch.no_grad():
        layer.weight.add_(1.0)  # e.g. an optimizer that carried momentum from before pruning
    apply_masks_(model)
    assert torch.all(layer.weight[layer.cq_mask.mask == 0] == 0)
