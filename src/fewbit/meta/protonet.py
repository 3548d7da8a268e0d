"""Prototypical Networks (Snell et al. 2017): logits are minus squared distances to class means."""

from __future__ import annotations

import torch
from torch import nn

from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.base import Algorithm, Deployment, MetaConfig, Params, StepOutput
from fewbit.meta.functional import expand_params, grouped_forward, grouped_layers, shared_forward, single_forward
from fewbit.meta.inner import task_accuracy, task_loss
from fewbit.meta.registry import register_algorithm


def embed_tasks(model: nn.Module, params: Params, x: torch.Tensor, batched: bool = True) -> torch.Tensor:
    """`model(x, embed=True)` per task, `[tasks, n, D]`, each task with its own batch statistics.

    Batched: the grouped forward with the shared params expanded over tasks (their gradients
    sum back), or `vmap` for models it does not handle.
    """
    if batched:
        layers = grouped_layers(model)
        if layers is None:
            return shared_forward(model)(params, x, embed=True)
        return grouped_forward(model, layers)(expand_params(params, x.shape[0]), x, embed=True)
    forward = single_forward(model)
    return torch.cat([forward(params, x[t : t + 1], embed=True) for t in range(x.shape[0])])


def prototypes(z_support: torch.Tensor, support_y: torch.Tensor, ways: int) -> torch.Tensor:
    """Class means `[tasks, ways, D]` of support embeddings `[tasks, N*K, D]`."""
    onehot = nn.functional.one_hot(support_y, ways).to(z_support.dtype)  # [tasks, N*K, ways]
    return onehot.transpose(1, 2) @ z_support / onehot.sum(1).unsqueeze(-1)


def proto_logits(z_query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Minus squared Euclidean distances `[tasks, N*Q, ways]`."""
    return -(z_query.unsqueeze(2) - protos.unsqueeze(1)).pow(2).sum(-1)


def centred_normalised(z: torch.Tensor, n_support: int) -> torch.Tensor:
    """SimpleShot's CL2N: embeddings `[tasks, n, D]` minus the mean of each task's support
    embeddings, then scaled to unit length."""
    z = z - z[:, :n_support].mean(1, keepdim=True)
    return nn.functional.normalize(z, dim=-1)


def cosine_logits(z_query: torch.Tensor, protos: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """`scale` x cosine similarity of each query to each prototype, `[tasks, N*Q, ways]`."""
    q = nn.functional.normalize(z_query, dim=-1)
    p = nn.functional.normalize(protos, dim=-1)
    return scale * (q @ p.transpose(-1, -2))


@register_algorithm("protonet", config=MetaConfig)
class ProtoNet(Algorithm):
    """Support and query of a task are embedded together (one batch-norm batch, as in the
    reference implementation); queries are scored against the support class means."""

    uses_trained_head = False  # any number of ways: no head is used

    @property
    def test_scope(self) -> str:
        return "none"  # prototypes move no parameter

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """Prototypes of the support and query embedded together; no head is stored. The steps and
        rate are for fine-tuning a prototype-initialised head on top, if a user asks the runtime for it."""
        return Deployment({"method": "prototypes", "embed": "joint", "scope": scope or "head", "steps": 5,
                           "lr": 0.1, "head_init": "prototypes"}, ships_head=False)

    def logits(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Query logits `[tasks, N*Q, ways]`."""
        if task.ways < 1:
            raise ConfigError(f"MetaConfig.algorithm: {self.name} needs a classification task (ways >= 1)")
        n_support = task.support_x.shape[1]
        z = embed_tasks(model, params, torch.cat([task.support_x, task.query_x], 1), self.config.batched)
        return self.score(z, n_support, task.support_y, task.ways, extras or {})

    def score(
        self, z: torch.Tensor, n_support: int, support_y: torch.Tensor, ways: int, extras: Params
    ) -> torch.Tensor:
        """Query logits from the task's embeddings `z [tasks, support + query, D]`: minus squared
        distances to the support class means."""
        return proto_logits(z[:, n_support:], prototypes(z[:, :n_support], support_y, ways))

    def step(
        self, model: nn.Module, params: Params, task: Task, extras: Params | None = None, *,
        outer_step: int | None = None,
    ) -> StepOutput:
        """Mean query cross-entropy over the meta-batch."""
        out = self.logits(model, params, task, extras)
        return StepOutput(task_loss(out, task.query_y).mean(), task_accuracy(out, task.query_y))

    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Query logits from the support prototypes."""
        with torch.no_grad():
            return self.logits(model, params, task, extras)
