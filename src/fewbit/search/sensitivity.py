"""How much each layer's option hurts, measured on episodes: the increase of the query loss.

For every layer and option, the model with that one layer compressed (every other layer left in
float32) adapts to the same seeded list of meta-training tasks as the float model, the way the
run's algorithm adapts at test time, and the mean query cross-entropy is compared with the float
model's. Measured directly, not estimated from a Fisher or Hessian trace: a trace estimate is a
second-order expansion around the float weights, which 1- and 2-bit grids and 90 % sparsity are
far outside, and it needs labels' gradients where an episode needs only forward passes (ProtoNet
adapts without any). A Conv-4 has 4 stored layers and about 40 options, so a few hundred tasks
cost a few minutes of forward passes; the paired task list (the same tasks for every option)
keeps the noise of the differences far below that of each loss.

`fisher_increase` is the cheap alternative (`SearchConfig.sensitivity: fisher`): one backward
pass per task gives each weight's mean gradient g and its empirical Fisher diagonal F (the mean
squared per-task gradient), and an option's increase is estimated as
`sum(g * d) + 0.5 * sum(F * d^2)` with `d` the option's perturbation of the layer's weight (its
quantized, pruned weight minus the float one). It needs a differentiable training loss (episodic
algorithms) and costs about three forward passes per task in all, against one per task per option
measured; it is a second-order expansion, so trust it least for the harshest options.

The search adds the layers' increases (a plan's estimated loss increase is their sum): the
usual separable approximation (HAWQ, mixed-precision knapsacks), which the re-ranking of the top
plans by short compression-aware training then checks on validation tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.data.task import Task
from fewbit.search.plan import LayerOption


def query_loss(model: nn.Module, algorithm: object, tasks: Sequence[Task], extras: Mapping[str, torch.Tensor]) -> float:
    """Mean query cross-entropy of `model` adapted by `algorithm` to each batch of `tasks`."""
    total, count = 0.0, 0
    params = dict(model.named_parameters())
    for task in tasks:
        logits = algorithm.predict(model, params, task, dict(extras))  # type: ignore[attr-defined]
        loss = F.cross_entropy(logits.detach().flatten(0, 1).float(), task.query_y.flatten(), reduction="sum")
        total += float(loss)
        count += int(task.query_y.numel())
    return total / max(count, 1)


def loss_increase(
    compressed: Callable[[Mapping[str, LayerOption]], nn.Module],
    base: nn.Module,
    options: Mapping[str, Iterable[LayerOption]],
    algorithm_for: Callable[[nn.Module], object],
    tasks: Sequence[Task],
    extras: Mapping[str, torch.Tensor],
    on_option: Callable[[str, LayerOption, float], None] | None = None,
) -> dict[str, list[float]]:
    """`layer -> [loss increase of each option]`: query loss with that layer alone at the option
    minus the float model's, on `tasks`. `compressed(plan)` builds a compressed copy of `base`;
    `algorithm_for(model)` the algorithm that adapts it (it projects onto that model's grids)."""
    reference = query_loss(base, algorithm_for(base), tasks, extras)
    out: dict[str, list[float]] = {}
    for layer, layer_options in options.items():
        row = []
        for option in layer_options:
            model = compressed({layer: option})
            delta = query_loss(model, algorithm_for(model), tasks, extras) - reference
            row.append(delta)
            if on_option is not None:
                on_option(layer, option, delta)
        out[layer] = row
    return out


def fisher_increase(
    compressed: Callable[[Mapping[str, LayerOption]], nn.Module],
    base: nn.Module,
    options: Mapping[str, Sequence[LayerOption]],
    algorithm: object,
    tasks: Sequence[Task],
    extras: Mapping[str, torch.Tensor],
) -> dict[str, list[float]]:
    """`layer -> [estimated loss increase of each option]` from the query loss's gradient and empirical
    Fisher diagonal over the single tasks of `tasks` (see the module docstring)."""
    params = dict(base.named_parameters())
    names = [f"{layer}.weight" for layer in options]
    grad_sum = {n: torch.zeros_like(params[n]) for n in names}
    square_sum = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for batch in tasks:
        for i in range(batch.num_tasks):
            loss = algorithm.step(base, params, batch[i], dict(extras)).loss  # type: ignore[attr-defined]
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads, strict=True):
                if g is not None:
                    grad_sum[n] += g.detach()
                    square_sum[n] += g.detach().pow(2)
            count += 1
    out: dict[str, list[float]] = {}
    for layer, layer_options in options.items():
        name = f"{layer}.weight"
        g, fisher = grad_sum[name] / max(count, 1), square_sum[name] / max(count, 1)
        weight = params[name].detach()
        row = []
        for option in layer_options:
            module = compressed({layer: option}).get_submodule(layer)
            with torch.no_grad():
                delta = module.compress_weight(module.weight) - weight
            row.append(float((g * delta).sum() + 0.5 * (fisher * delta.pow(2)).sum()))
        out[layer] = row
    return out
