"""MAML (second order) and first-order MAML: adapt on the support set, score the query set."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.base import RUNTIME_SCOPE, Algorithm, Deployment, Params, StepOutput
from fewbit.meta.functional import BatchedForward, batched_forward, expand_params, module_head_forward, single_forward
from fewbit.meta.inner import LearningRate, inner_loop, task_accuracy, task_loss
from fewbit.meta.registry import register_algorithm
from fewbit.meta.scopes import NameFilter, scope_filter
from fewbit.models.backbone import Backbone


@register_algorithm("maml")
class MAML(Algorithm):
    """Model-Agnostic Meta-Learning (Finn et al. 2017): the outer loss is the query loss after
    `inner_steps` steps on the support set, differentiated through the steps (unless
    `first_order`). Subclasses change the scope (ANIL), the learning rate (Meta-SGD) or the
    outer update (Reptile). `project` is handed to the inner loop (compression sets it).
    """

    fixed_scope: str | None = None  # a scope that overrides config.scope (ANIL: head)

    @property
    def first_order(self) -> bool:
        return self.config.first_order

    @property
    def test_scope(self) -> str:
        return self.fixed_scope or self.config.scope

    def adapt_filter(self, model: nn.Module) -> NameFilter:
        """Which parameters the inner loop adapts."""
        return scope_filter(self.test_scope, model)

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """SGD from the trained head on the support set (its own batch), `test_inner_steps` steps of
        `inner_lr`; the queries are classified as their own batch. The runtime moves what the scope
        allows except quantized body weights (`RUNTIME_SCOPE`)."""
        allowed = RUNTIME_SCOPE[self.test_scope]
        chosen = scope or allowed
        if not set(_parts(chosen)) <= set(_parts(allowed)):
            raise ConfigError(f"export: scope {chosen!r} moves more than {self.name} adapts ({allowed!r})")
        return Deployment({"method": "sgd", "embed": "separate", "scope": chosen,
                           "steps": int(self.config.test_inner_steps), "lr": float(self.config.inner_lr),
                           "head_init": "own"})

    def inner_lr(self, extras: Params) -> LearningRate:
        """A scalar here; Meta-SGD returns its per-parameter learning rates."""
        return self.config.inner_lr

    def step(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> StepOutput:
        """Mean query loss over the meta-batch after adapting each task on its support set.

        With `config.task_chunk` > 0 (batched path, autograd recording) the meta-batch is done
        `task_chunk` tasks at a time and each chunk's gradient is taken at once, so only one
        chunk's graph is ever held; the returned loss carries those gradients (see `with_grads`).
        """
        extras = extras or {}
        chunk = self.config.task_chunk
        inputs = [t for t in (*params.values(), *extras.values()) if t.requires_grad]
        if not (self.config.batched and 0 < chunk < task.num_tasks and inputs and torch.is_grad_enabled()):
            out = self.adapted_outputs(model, params, task, extras, self.config.inner_steps, self.first_order)
            return StepOutput(task_loss(out, task.query_y).mean(), task_accuracy(out, task.query_y))
        total_loss, correct, grads = 0.0, 0.0, [torch.zeros_like(t) for t in inputs]
        for start in range(0, task.num_tasks, chunk):
            sub = task[start : start + chunk]
            out = self.adapted_outputs(model, params, sub, extras, self.config.inner_steps, self.first_order)
            loss = task_loss(out, sub.query_y).sum() / task.num_tasks
            for g, gi in zip(grads, torch.autograd.grad(loss, inputs, allow_unused=True)):
                if gi is not None:
                    g += gi
            total_loss += loss.detach()
            acc = task_accuracy(out, sub.query_y)
            correct += 0.0 if acc is None else acc * sub.num_tasks
        accuracy = None if task.ways == 0 else correct / task.num_tasks
        return StepOutput(with_grads(total_loss, inputs, grads), accuracy)

    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Query outputs after `config.test_inner_steps` inner steps on each support set."""
        params = {n: p.detach() for n, p in params.items()}
        extras = {n: p.detach() for n, p in (extras or {}).items()}
        with torch.no_grad():
            return self.adapted_outputs(model, params, task, extras, self.config.test_inner_steps, True)

    def adapted_outputs(
        self, model: nn.Module, params: Params, task: Task, extras: Params, steps: int, first_order: bool
    ) -> torch.Tensor:
        """Query outputs `[tasks, N*Q, out]` of the fast weights adapted on each support set."""
        keep = self.adapt_filter(model)
        names = [n for n in params if keep(n)]
        lr = self.inner_lr(extras)
        head_only = isinstance(model, Backbone) and isinstance(model.head, nn.Linear)
        head_only = head_only and all(n.startswith("head.") for n in names)
        if not self.config.batched:  # the reference path: one task at a time
            outs = []
            for t in range(task.num_tasks):
                sub = task[t]
                outs.append(
                    self._adapt(model, single_forward(model), params, sub, keep, lr, steps, first_order, head_only)
                )
            return torch.cat(outs)
        batched = expand_params(params, task.num_tasks)
        return self._adapt(model, batched_forward(model), batched, task, keep, lr, steps, first_order, head_only)

    def _adapt(
        self,
        model: nn.Module,
        forward: BatchedForward,
        params: Params,
        task: Task,
        keep: NameFilter,
        lr: LearningRate,
        steps: int,
        first_order: bool,
        head_only: bool,
    ) -> torch.Tensor:
        if head_only:  # ANIL: the body is fixed in the inner loop, so embed once and adapt the head
            z_support = forward(params, task.support_x, embed=True)
            z_query = forward(params, task.query_x, embed=True)
            head = module_head_forward(model)  # through the (possibly compressed) head module
            fast = inner_loop(
                head,
                params,
                z_support,
                task.support_y,
                steps=steps,
                lr=lr,
                adapt=keep,
                first_order=first_order,
                project=self.project,
            )
            return head(fast, z_query)
        support_forward = functools.partial(forward, channels_last=False)  # see grouped_forward
        fast = inner_loop(
            support_forward,
            params,
            task.support_x,
            task.support_y,
            steps=steps,
            lr=lr,
            adapt=keep,
            first_order=first_order,
            project=self.project,
        )
        return forward(fast, task.query_x, channels_last=True)


@register_algorithm("fomaml")
class FOMAML(MAML):
    """First-order MAML: the outer gradient is the query gradient at the fast weights."""

    @property
    def first_order(self) -> bool:
        return True


def _parts(scope: str) -> list[str]:
    return [] if scope == "none" else scope.split("+")


class _WithGrads(torch.autograd.Function):
    """A value whose gradient w.r.t. `inputs` is already known."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, count: int, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(*tensors[count:])
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads = ctx.saved_tensors
        return (None, None, *(grad_output * g for g in grads), *(None for _ in grads))


def with_grads(value: torch.Tensor, inputs: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """`value` (detached) made differentiable: d value / d inputs[i] = grads[i] (first order only)."""
    return _WithGrads.apply(value.detach(), len(inputs), *inputs, *grads)
