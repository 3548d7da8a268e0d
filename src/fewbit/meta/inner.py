"""The one shared functional inner loop, used by training and evaluation alike.

The loop only sees a `forward(params, x) -> outputs` function and a per-task loss, so the
same code adapts one task (params unbatched) or a whole meta-batch at once (params carrying
a leading `tasks` dimension, outputs `[tasks, ...]`): since tasks never mix, the gradient of
the sum of per-task losses w.r.t. batched params is each task's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from fewbit.meta.base import Params, Project

Forward = Callable[[Params, torch.Tensor], torch.Tensor]
TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs [tasks, n, ...], targets) -> [tasks]
# A scalar, a per-parameter dict of tensors (Meta-SGD), or a function of the step index giving
# either (per-step rates: MAML++'s LSLR).
LearningRate = float | Mapping[str, torch.Tensor] | Callable[[int], "float | Mapping[str, torch.Tensor]"]


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-task mean loss `[tasks]`: cross-entropy for integer targets, MSE for float targets."""
    tasks = outputs.shape[0]
    if targets.is_floating_point():
        return (outputs - targets).pow(2).reshape(tasks, -1).mean(1)
    ways = outputs.shape[-1]
    ce = F.cross_entropy(outputs.reshape(-1, ways), targets.reshape(-1), reduction="none")
    return ce.view(tasks, -1).mean(1)


def task_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Mean query accuracy over all tasks (None for regression)."""
    if targets.is_floating_point():
        return None
    return (outputs.detach().argmax(-1) == targets).float().mean()


def inner_loop(
    forward: Forward,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: LearningRate,
    adapt: Callable[[str], bool] | None = None,
    first_order: bool = False,
    project: Project | None = None,
    loss_fn: TaskLoss = task_loss,
    after_step: Callable[[int, Params], None] | None = None,
) -> Params:
    """`steps` gradient steps on `loss_fn(forward(params, x), y)`; returns the fast weights.

    `adapt(name)` picks the parameters that move (None: all); the others are passed through.
    `lr` is a scalar, a per-parameter dict of tensors broadcastable to each parameter
    (Meta-SGD), or a function of the step index giving either (per-step rates). Second order by
    default (`create_graph=True` while autograd records, so the outer gradient flows through the
    steps); `first_order=True` detaches the inner gradients.
    `project` is applied to the fast weights after each step (compression re-quantizes or
    masks there); None is the identity. `after_step(i, fast)` sees the fast weights after step i
    (the multi-step loss scores the queries there).
    """
    names = [n for n in params if adapt is None or adapt(n)]
    fast = dict(params)
    if steps == 0 or not names:
        return fast
    with torch.enable_grad():
        for n in names:
            if not fast[n].requires_grad:  # evaluation: adapt detached parameters
                fast[n] = fast[n].detach().requires_grad_()
        outer = any(params[n].requires_grad for n in names) or _requires_grad(lr)
        create_graph = outer and not first_order
        for i in range(steps):
            loss = loss_fn(forward(fast, x), y).sum()
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph, allow_unused=True)
            lr_i = lr(i) if callable(lr) else lr
            for n, g in zip(names, grads):
                if g is None:  # a parameter the loss does not use (a cosine head's bias)
                    continue
                step_lr = lr_i if isinstance(lr_i, (int, float)) else lr_i[n]
                fast[n] = fast[n] - step_lr * g
                if not outer:  # nothing to differentiate later: keep no graph across steps
                    fast[n] = fast[n].detach().requires_grad_()
            if project is not None:
                fast = project(fast)
            if after_step is not None:
                after_step(i, fast)
    return fast


def _requires_grad(lr: LearningRate) -> bool:
    if callable(lr):
        lr = lr(0)
    return not isinstance(lr, (int, float)) and any(v.requires_grad for v in lr.values())
