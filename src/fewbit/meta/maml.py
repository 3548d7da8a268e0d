"""MAML (second order) and first-order MAML: adapt on the support set, score the query set."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fewbit.config import brief, check, setting
from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.base import OWNER, RUNTIME_SCOPE, Algorithm, Deployment, MetaConfig, Params, StepOutput, check_bool
from fewbit.meta.functional import BatchedForward, batched_forward, expand_params, module_head_forward, single_forward
from fewbit.meta.inner import LearningRate, inner_loop, task_accuracy, task_loss
from fewbit.meta.registry import register_algorithm
from fewbit.meta.scopes import NameFilter, scope_filter
from fewbit.models.backbone import Backbone

LSLR = "lslr."  # extras `lslr.<parameter name>`: a learned rate per inner step
LR_STEP_TENSOR = "__lrstep."  # an exported per-step rate vector's name: the parameter's name behind it


@dataclasses.dataclass(frozen=True, kw_only=True)
class MAMLConfig(MetaConfig):
    """MAML's settings: the shared inner loop, plus MAML++ (Antoniou et al. 2019).

    `first_order_steps`: outer steps trained first-order before second order takes over.
    `multi_step_loss_steps`: outer steps over which the query loss after every inner step counts,
    annealed from equal weights to the last step alone (0: the last step only). `lslr`: learn a
    rate per parameter tensor and inner step (extras `lslr.<name>`).
    """

    algorithm: str = "maml"
    first_order_steps: int = setting(0, "MAML++: outer steps trained first-order first")
    multi_step_loss_steps: int = setting(0, "MAML++: outer steps of the annealed multi-step loss")
    lslr: bool = setting(False, "MAML++: a learned rate per layer and inner step")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("first_order_steps", "multi_step_loss_steps"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, OWNER, name,
                  f"must be an integer >= 0, got {brief(value)}")
        check_bool(self, "lslr")


@register_algorithm("maml", config=MAMLConfig)
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
        adaptation = {"method": "sgd", "embed": "separate", "scope": chosen,
                      "steps": int(self.config.test_inner_steps), "lr": float(self.config.inner_lr), "head_init": "own"}
        if not self.config.lslr:
            return Deployment(adaptation)
        rates = {n[len(LSLR):]: v for n, v in (extras or {}).items() if n.startswith(LSLR)}
        moved = runtime_moved(model, chosen, rates)
        adaptation["lr_step_tensors"] = {n: f"{LR_STEP_TENSOR}{n}" for n in moved}
        return Deployment(adaptation, {f"{LR_STEP_TENSOR}{n}": rates[n].detach() for n in moved})

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """With `lslr`: a rate per adapted parameter tensor and inner step, initialised to `inner_lr`."""
        if not self.config.lslr:
            return {}
        keep, steps = self.adapt_filter(model), max(1, self.config.inner_steps)
        return {LSLR + n: nn.Parameter(torch.full((steps,), float(self.config.inner_lr)))
                for n, _ in model.named_parameters() if keep(n)}

    def inner_lr(self, extras: Params) -> LearningRate:
        """The scalar `inner_lr`, or with `lslr` each parameter's learned rate for the step at hand
        (steps past the trained ones take the last). Meta-SGD returns per-entry rates."""
        if not self.config.lslr:
            return self.config.inner_lr
        rates = {n[len(LSLR):]: v for n, v in extras.items() if n.startswith(LSLR)}
        if not rates:
            raise ConfigError("MetaConfig.lslr: no learned rates (extras lslr.*) given; pass the run's extras")
        return lambda i: {n: v[min(i, v.shape[0] - 1)] for n, v in rates.items()}

    def step(
        self, model: nn.Module, params: Params, task: Task, extras: Params | None = None, *,
        outer_step: int | None = None,
    ) -> StepOutput:
        """Mean query loss over the meta-batch after adapting each task on its support set.

        MAML++: until `first_order_steps` outer steps the outer gradient is first order; until
        `multi_step_loss_steps` the loss averages the query losses after every inner step, with
        weights annealed from equal to the last step alone. With `config.task_chunk` > 0 (batched
        path, autograd recording) the meta-batch is done `task_chunk` tasks at a time and each
        chunk's gradient is taken at once, so only one chunk's graph is ever held; the returned
        loss carries those gradients (see `with_grads`).
        """
        extras = extras or {}
        cfg = self.config
        first_order = self.first_order or (outer_step is not None and outer_step <= cfg.first_order_steps)
        weights = self._step_weights(outer_step)
        chunk = cfg.task_chunk
        inputs = [t for t in (*params.values(), *extras.values()) if t.requires_grad]
        if not (cfg.batched and 0 < chunk < task.num_tasks and inputs and torch.is_grad_enabled()):
            loss, out = self._query_loss(model, params, task, extras, first_order, weights)
            return StepOutput(loss.mean(), task_accuracy(out, task.query_y))
        total_loss, correct, grads = 0.0, 0.0, [torch.zeros_like(t) for t in inputs]
        for start in range(0, task.num_tasks, chunk):
            sub = task[start : start + chunk]
            loss, out = self._query_loss(model, params, sub, extras, first_order, weights)
            loss = loss.sum() / task.num_tasks
            for g, gi in zip(grads, torch.autograd.grad(loss, inputs, allow_unused=True)):
                if gi is not None:
                    g += gi
            total_loss += loss.detach()
            acc = task_accuracy(out, sub.query_y)
            correct += 0.0 if acc is None else acc * sub.num_tasks
        accuracy = None if task.ways == 0 else correct / task.num_tasks
        return StepOutput(with_grads(total_loss, inputs, grads), accuracy)

    def _step_weights(self, outer_step: int | None) -> list[float] | None:
        """The multi-step loss's weight of the query loss after each inner step (None: last step only)."""
        cfg, steps = self.config, self.config.inner_steps
        if not cfg.multi_step_loss_steps or outer_step is None or outer_step > cfg.multi_step_loss_steps or steps < 2:
            return None
        progress = outer_step / cfg.multi_step_loss_steps
        last = 1.0 / steps + (1.0 - 1.0 / steps) * progress
        return [(1.0 - last) / (steps - 1)] * (steps - 1) + [last]

    def _query_loss(
        self, model: nn.Module, params: Params, task: Task, extras: Params, first_order: bool,
        weights: list[float] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-task query loss `[tasks]`, the final query outputs)."""
        if weights is None:
            out = self.adapted_outputs(model, params, task, extras, self.config.inner_steps, first_order)
            return task_loss(out, task.query_y), out
        per_step: list[torch.Tensor] = []
        out = self.adapted_outputs(model, params, task, extras, self.config.inner_steps, first_order, per_step)
        loss = sum(w * task_loss(o, task.query_y) for w, o in zip(weights, per_step))
        return loss, out  # type: ignore[return-value]

    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Query outputs after `config.test_inner_steps` inner steps on each support set."""
        params = {n: p.detach() for n, p in params.items()}
        extras = {n: p.detach() for n, p in (extras or {}).items()}
        with torch.no_grad():
            return self.adapted_outputs(model, params, task, extras, self.config.test_inner_steps, True)

    def adapted_outputs(
        self, model: nn.Module, params: Params, task: Task, extras: Params, steps: int, first_order: bool,
        per_step: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Query outputs `[tasks, N*Q, out]` of the fast weights adapted on each support set
        (with `per_step`, the query outputs after every inner step are appended to it)."""
        keep = self.adapt_filter(model)
        names = [n for n in params if keep(n)]
        lr = self.inner_lr(extras)
        head_only = isinstance(model, Backbone) and isinstance(model.head, nn.Linear)
        head_only = head_only and all(n.startswith("head.") for n in names)
        if not self.config.batched:  # the reference path: one task at a time
            outs = []
            for t in range(task.num_tasks):
                sub = task[t]
                collected: list[torch.Tensor] | None = [] if per_step is not None else None
                outs.append(self._adapt(model, single_forward(model), params, sub, keep, lr, steps, first_order,
                                        head_only, collected))
                if per_step is not None:
                    assert collected is not None
                    if not per_step:
                        per_step.extend([] for _ in collected)  # type: ignore[misc]
                    for i, o in enumerate(collected):
                        per_step[i].append(o)  # type: ignore[attr-defined]
            if per_step is not None:
                per_step[:] = [torch.cat(o) for o in per_step]  # type: ignore[arg-type]
            return torch.cat(outs)
        batched = expand_params(params, task.num_tasks)
        return self._adapt(model, batched_forward(model), batched, task, keep, lr, steps, first_order, head_only,
                           per_step)

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
        per_step: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if head_only:  # ANIL: the body is fixed in the inner loop, so embed once and adapt the head
            z_support = forward(params, task.support_x, embed=True)
            z_query = forward(params, task.query_x, embed=True)
            head = module_head_forward(model)  # through the (possibly compressed) head module
            score: Callable[[Params], torch.Tensor] = lambda fast: head(fast, z_query)  # noqa: E731
            support_forward: BatchedForward = head
            x = z_support
        else:
            support_forward = functools.partial(forward, channels_last=False)  # see grouped_forward
            score = lambda fast: forward(fast, task.query_x, channels_last=True)  # noqa: E731
            x = task.support_x
        after = None if per_step is None else (lambda i, fast: per_step.append(score(fast)))
        fast = inner_loop(support_forward, params, x, task.support_y, steps=steps, lr=lr, adapt=keep,
                          first_order=first_order, project=self.project, after_step=after)
        return per_step[-1] if per_step else score(fast)


@register_algorithm("fomaml", config=MAMLConfig)
class FOMAML(MAML):
    """First-order MAML: the outer gradient is the query gradient at the fast weights."""

    @property
    def first_order(self) -> bool:
        return True


def _parts(scope: str) -> list[str]:
    return [] if scope == "none" else scope.split("+")


def runtime_moved(model: nn.Module, runtime_scope: str, names: Params) -> list[str]:
    """Which of `names` the runtime moves under `runtime_scope` (head, bias, norm parts): the
    parameters whose learned rates an artifact must carry."""
    parts = set(_parts(runtime_scope))
    norm_or_bias = scope_filter("bias_norm", model)
    return sorted(
        n for n in names
        if ("head" in parts and n.startswith("head."))
        or ("bias" in parts and n.endswith(".bias"))
        or ("norm" in parts and norm_or_bias(n) and not n.endswith(".bias"))
    )


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
