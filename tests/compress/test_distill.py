"""Distillation: a student learns its teacher's logits and embeddings."""

from __future__ import annotations

import torch

from fewbit.compress import compress, distill, kd_loss
from fewbit.models import build_backbone


def _batches(n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(32, 64, generator=gen), torch.randint(0, 10, (32,), generator=gen)) for _ in range(n)]


def test_kd_loss_is_zero_for_identical_logits() -> None:
    z = torch.randn(4, 10)
    assert float(kd_loss(z, z)) < 1e-6 and float(kd_loss(z, -z)) > 0


def test_logit_distillation_brings_student_closer(mlp) -> None:
    torch.manual_seed(1)
    student = compress(build_backbone("mlp", ways=10, in_features=64, hidden=(32,)), "quant:w4")
    data = _batches()
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        before = float(kd_loss(student(x), mlp(x)))
    distill(mlp, student, data, epochs=5, alpha=1.0, lr=1e-2)
    with torch.no_grad():
        assert float(kd_loss(student(x), mlp(x))) < before


def test_feature_matching_with_projection(mlp) -> None:
    torch.manual_seed(1)
    student = build_backbone("mlp", ways=10, in_features=64, hidden=(32,))
    metrics = distill(mlp, student, _batches(4), epochs=3, mode="features", lr=1e-2)
    assert metrics["steps"] == 12 and metrics["loss"] >= 0
