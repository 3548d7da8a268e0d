"""Knowledge distillation: train a (slimmer, compressed) student from a teacher.

Logit distillation (Hinton et al. 2015): KL(teacher/T || student/T) * T^2, mixed with the
cross-entropy on labels when batches carry them. Feature matching (for ProtoNet embeddings):
MSE between the student's and the teacher's `embed=True` outputs, through a learned linear
projection when their widths differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.errors import ConfigError


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Mean KL divergence between temperature-softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, -1),
        F.log_softmax(teacher_logits.detach() / t, -1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def feature_loss(
    student_z: torch.Tensor, teacher_z: torch.Tensor, projection: nn.Module | None = None
) -> torch.Tensor:
    """MSE between (projected) student embeddings and teacher embeddings `[n, D]`."""
    z = student_z if projection is None else projection(student_z)
    return F.mse_loss(z, teacher_z.detach())


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return model(x, embed=True)
    except TypeError:
        return model(x)


def distill(
    teacher: nn.Module,
    student: nn.Module,
    batches: Iterable[Any],
    *,
    epochs: int = 1,
    temperature: float = 4.0,
    alpha: float = 0.9,
    mode: str = "logits",
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Train `student` on `batches` (tensors `x` or pairs `(x, y)`) to mimic `teacher`; returns metrics.

    `mode="logits"`: loss = alpha * KD + (1 - alpha) * CE(y) (CE only when labels are given).
    `mode="features"`: loss = MSE of embeddings (`model(x, embed=True)`), through a learned
    projection when the widths differ. The teacher is frozen and put in eval mode; `batches`
    must be re-iterable when `epochs > 1`. Adam with `lr` unless `optimizer` is given.
    """
    if mode not in ("logits", "features"):

        raise ConfigError(f"distill.mode: must be logits or features, got {mode!r}")
    teacher.eval()
    projection: nn.Module | None = None
    params = list(student.parameters())
    if mode == "features":
        probe = next(iter(batches))
        x0 = probe[0] if isinstance(probe, (tuple, list)) else probe
        with torch.no_grad():
            ds, dt = _embed(student, x0).shape[-1], _embed(teacher, x0).shape[-1]
        if ds != dt:
            projection = nn.Linear(ds, dt, bias=False)
            params += list(projection.parameters())
    opt = optimizer or torch.optim.Adam(params, lr=lr)
    student.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for batch in batches:
            x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
            with torch.no_grad():
                target = _embed(teacher, x) if mode == "features" else teacher(x)
            if mode == "features":
                loss = feature_loss(_embed(student, x), target, projection)
            else:
                logits = student(x)
                loss = alpha * kd_loss(logits, target, temperature)
                if y is not None and alpha < 1.0:
                    loss = loss + (1.0 - alpha) * F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
    return {"loss": total / max(count, 1), "steps": float(count)}
