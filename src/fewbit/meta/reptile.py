"""Reptile (Nichol et al. 2018): move the initialisation toward each task's adapted weights."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fewbit.config import setting
from fewbit.data.task import Task
from fewbit.meta.base import Params, StepOutput, check_positive, check_steps
from fewbit.meta.functional import batched_forward, expand_params, single_forward
from fewbit.meta.inner import inner_loop, task_accuracy, task_loss
from fewbit.meta.maml import MAML, MAMLConfig
from fewbit.meta.registry import register_algorithm


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReptileConfig(MAMLConfig):
    """Reptile's settings: the SGD steps on each task's support + query while meta-training."""

    algorithm: str = "reptile"
    reptile_steps: int = setting(5, "Reptile: inner SGD steps on support + query while meta-training")
    reptile_lr: float | None = setting(None, "Reptile: their learning rate (default: inner_lr)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self, "reptile_steps")
        check_positive(self, "reptile_lr", optional=True)


@register_algorithm("reptile", config=ReptileConfig)
class Reptile(MAML):
    """Training: `reptile_steps` SGD steps (lr `reptile_lr`) on each task's support + query;
    the outer "gradient" is `params - mean(adapted params)` (StepOutput.grads), which an
    outer SGD with learning rate eps turns into Reptile's `params += eps * (mean(adapted) - params)`.
    Evaluation adapts on the support set with the shared inner loop, like MAML.
    """

    def step(
        self, model: nn.Module, params: Params, task: Task, extras: Params | None = None, *,
        outer_step: int | None = None,
    ) -> StepOutput:
        """Adapt every task of the meta-batch; grads = params - mean adapted params."""
        cfg = self.config
        keep = self.adapt_filter(model)
        lr = cfg.reptile_lr or cfg.inner_lr
        detached = {n: p.detach() for n, p in params.items()}
        x = torch.cat([task.support_x, task.query_x], 1)  # [tasks, N*(K+Q), ...]
        y = torch.cat([task.support_y, task.query_y], 1)
        kw = {"steps": cfg.reptile_steps, "lr": lr, "adapt": keep, "project": self.project}
        with torch.no_grad():
            if cfg.batched:
                forward = batched_forward(model)
                fast = inner_loop(forward, expand_params(detached, task.num_tasks), x, y, **kw)
                out = forward(fast, task.query_x)
                mean_fast = {n: v.mean(0) for n, v in fast.items()}
            else:
                forward = single_forward(model)
                fasts, outs = [], []
                for t in range(task.num_tasks):
                    f = inner_loop(forward, detached, x[t : t + 1], y[t : t + 1], **kw)
                    fasts.append(f)
                    outs.append(forward(f, task.query_x[t : t + 1]))
                out = torch.cat(outs)
                mean_fast = {n: torch.stack([f[n] for f in fasts]).mean(0) for n in detached}
        grads = {n: (detached[n] - mean_fast[n]).detach() for n in detached}
        return StepOutput(task_loss(out, task.query_y).mean().detach(), task_accuracy(out, task.query_y), grads)
