"""Weight clustering: at most k values, centroids learn, codebook respected by fast weights."""

from __future__ import annotations

import pytest
import torch

from fewbit.compress import compress, project_params
from fewbit.compress.cluster import kmeans_1d
from fewbit.errors import ConfigError


@pytest.mark.parametrize("k", [2, 5, 16])
def test_at_most_k_values_from_the_codebook(mlp, k: int) -> None:
    model = compress(mlp, f"cluster:{k}")
    layer = model.features[3]
    w = layer.compress_weight(layer.weight)
    values = w.unique()
    assert values.numel() <= k
    assert all(torch.isclose(layer.cq_codebook.centroids, v).any() for v in values)


def test_kmeans_finds_separated_clusters() -> None:
    x = torch.cat([torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 3.0)])
    assert torch.allclose(kmeans_1d(x, 3), torch.tensor([-1.0, 0.5, 3.0]))


def test_centroids_receive_gradients_and_fast_weights_snap(mlp) -> None:
    model = compress(mlp, "cluster:8")
    x = torch.randn(4, 64)
    model(x).pow(2).sum().backward()
    assert model.head.cq_codebook.centroids.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0
    fast = project_params(model, {"head.weight": model.head.weight + 0.3})
    assert fast["head.weight"].unique().numel() <= 8


def test_k_larger_than_a_layer_is_an_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="ClusterConfig.k: 8 centroids for layer 0"):
        compress(model, "cluster:8")
