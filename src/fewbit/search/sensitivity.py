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
