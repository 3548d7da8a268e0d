"""SimpleShot (Wang et al. 2019): a classifier trained over all training classes, then nearest
class mean of centred, unit-length embeddings (CL2N).

Training is the fine-tune baseline's supervised step (a linear head over every training class);
at test time the head is dropped and each query goes to the nearest support class mean once the
embeddings are centred and L2-normalised. SimpleShot centres with the mean feature of the
training classes; here the task's support mean takes its place, because fewbit normalises with
each task's own statistics throughout (batch-statistics BatchNorm), so a mean taken over training
batches would describe no task in particular.
"""

from __future__ import annotations

import torch
from torch import nn

from fewbit.data.task import Task
from fewbit.meta.base import Deployment, Params
from fewbit.meta.finetune import Finetune, FinetuneConfig
from fewbit.meta.protonet import centred_normalised, embed_tasks, proto_logits, prototypes
from fewbit.meta.registry import register_algorithm


@register_algorithm("simpleshot", config=FinetuneConfig)
class SimpleShot(Finetune):
    """Supervised pre-training; CL2N nearest class mean at test time (no head fitted)."""

    @property
    def test_scope(self) -> str:
        return "none"

    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Minus squared distances of the centred, normalised queries to the support class means."""
        with torch.no_grad():
            n = task.support_x.shape[1]
            x = torch.cat([task.support_x, task.query_x], 1)
            z = centred_normalised(embed_tasks(model, params, x, self.config.batched), n)
            return proto_logits(z[:, n:], prototypes(z[:, :n], task.support_y, task.ways))

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """Prototypes of centred (by the support mean), unit-length embeddings; no head is stored."""
        return Deployment({"method": "prototypes", "embed": "joint", "scope": scope or "head", "steps": 5,
                           "lr": 0.1, "head_init": "prototypes", "center": "support", "normalize": True},
                          ships_head=False)
