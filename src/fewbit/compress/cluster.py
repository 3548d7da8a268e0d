"""Weight clustering: a k-means codebook per layer (k = 2..256), centroids fine-tunable.

Every weight takes the value of its nearest centroid (recomputed on each forward, so fast
weights of an inner loop snap to the same codebook). The gradient reaches both the weight
(straight-through) and the centroids (each centroid receives the gradients of its members),
as in Deep Compression and TFMOT's clustering.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from fewbit.compress.layers import CompressedMixin, WeightTransform
from fewbit.compress.registry import check_layers, register_method
from fewbit.errors import ConfigError

OWNER = "ClusterConfig"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """`k` shared values per layer, found by 1-D k-means (`iters` Lloyd steps, quantile init).

    `learnable` makes the centroids parameters (`cq_codebook.centroids`) that training tunes.
    """

    k: int = 16
    iters: int = 30
    learnable: bool = True
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 2 <= self.k <= 256:
            raise ConfigError(f"{OWNER}.k: must be an integer in 2..256, got {self.k!r}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 0:
            raise ConfigError(f"{OWNER}.iters: must be an integer >= 0, got {self.iters!r}")
        if not isinstance(self.learnable, bool):
            raise ConfigError(f"{OWNER}.learnable: must be true or false, got {self.learnable!r}")
        check_layers(OWNER, self.layers)

    @property
    def bits(self) -> int:
        """Bits per stored code: ceil(log2 k)."""
        return max(1, math.ceil(math.log2(self.k)))


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> torch.Tensor:
    """Sorted `[k]` centroids of the 1-D `values` (quantile initialisation, then Lloyd steps)."""
    x = values.detach().reshape(-1).float()
    qs = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    sample = x if x.numel() <= 1_000_000 else x[:: x.numel() // 1_000_000 + 1]
    centroids = torch.quantile(sample, qs.to(x.device))
    for _ in range(iters):
        idx = nearest(x, centroids)
        sums = torch.zeros(k, device=x.device).index_add_(0, idx, x)
        counts = torch.zeros(k, device=x.device).index_add_(0, idx, torch.ones_like(x))
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids.sort().values


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for every element of `x` (ties: the lower index)."""
    return (x.detach().unsqueeze(-1) - centroids.detach()).abs().argmin(-1)


class Codebook(WeightTransform):
    """Snap a weight to its nearest centroid (`cq_codebook`)."""

    def __init__(self, config: ClusterConfig, weight: torch.Tensor) -> None:
        super().__init__()
        self.k = config.k
        self.bits = config.bits
        centroids = kmeans_1d(weight, config.k, config.iters).to(weight.device)
        if config.learnable:
            self.centroids = nn.Parameter(centroids)
        else:
            self.register_buffer("centroids", centroids)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Centroid index of every element of `w` (what `convert` stores)."""
        return nearest(w, self.centroids)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            idx = nearest(w, self.centroids)
        snapped = self.centroids[idx]  # gradient to the centroids
        return snapped + (w - w.detach())

    def extra_repr(self) -> str:
        return f"k={self.k}"


def _parse(args: list[str]) -> ClusterConfig:
    """`cluster:K`."""
    if len(args) != 1 or not args[0].isdigit():
        raise ConfigError(
            f"spec: cluster takes the number of centroids, e.g. cluster:16, got {':'.join(args)!r}"
        )
    return ClusterConfig(k=int(args[0]))


@register_method("cluster", ClusterConfig, _parse)
def _install(layer: Any, config: ClusterConfig, name: str, model: nn.Module) -> None:
    assert isinstance(layer, CompressedMixin)
    if hasattr(layer, "cq_weight") or hasattr(layer, "cq_codebook"):
        raise ConfigError(f"spec: layer {name} is already quantized or clustered; one value method per layer")
    numel = layer.weight.numel()  # type: ignore[attr-defined]
    if config.k > numel:
        raise ConfigError(f"{OWNER}.k: {config.k} centroids for layer {name}, which has only {numel} weights")
    with torch.no_grad():
        seen = layer.compress_weight(layer.weight)  # type: ignore[attr-defined]
    layer.add_transform("cq_codebook", Codebook(config, seen))
