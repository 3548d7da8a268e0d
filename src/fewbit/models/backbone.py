"""Backbone: a feature extractor followed by a linear head, usable with `functional_call`."""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """`features` (the embedding) then `head` (a linear classifier over `ways` classes).

    Parameters of the head are named `head.*`, which is how ANIL and head-only adaptation
    pick them. `forward(x, embed=True)` returns the embedding instead of logits.
    """

    def __init__(self, features: nn.Module, feature_dim: int, ways: int, name: str) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, ways) if ways > 0 else nn.Identity()
        self.feature_dim = feature_dim
        self.ways = ways
        self.arch = name

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        z = self.features(x).flatten(1)
        return z if embed else self.head(z)
