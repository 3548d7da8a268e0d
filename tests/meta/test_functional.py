"""Batched forwards: grouped (tasks folded into channels) and vmap agree with a per-task loop."""

from __future__ import annotations

import torch
from torch.func import functional_call

from fewbit.meta.functional import (
    batched_forward,
    grouped_layers,
    shared_forward,
    single_forward,
    vmap_forward,
)
from fewbit.models import build_backbone

from .conftest import make_task, tiny_conv, tiny_resnet


def _per_task_params(model: torch.nn.Module, tasks: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        n: p.detach() + 0.1 * torch.randn(tasks, *p.shape, generator=g, dtype=p.dtype)
        for n, p in model.named_parameters()
    }


def test_conv4_and_mlp_take_the_grouped_path_resnet_falls_back() -> None:
    assert grouped_layers(tiny_conv()) is not None
    assert grouped_layers(build_backbone("mlp", ways=1, in_features=1, hidden=(4,))) is not None
    assert grouped_layers(tiny_resnet()) is None


def test_grouped_forward_equals_per_task_functional_call() -> None:
    model = tiny_conv()
    task = make_task(tasks=4, ways=3, shots=2, queries=1, size=16)
    params = _per_task_params(model, 4)
    for embed in (False, True):
        got = batched_forward(model)(params, task.support_x, embed=embed)
        kwargs = {"embed": embed}
        want = torch.stack(
            [
                functional_call(model, {n: p[t] for n, p in params.items()}, (task.support_x[t],), kwargs)
                for t in range(4)
            ]
        )
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(vmap_forward(model)(params, task.support_x, embed=embed), want)


def test_mlp_grouped_forward_and_shared_forward() -> None:
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=1, in_features=1, hidden=(5, 5)).double()
    x = torch.randn(3, 7, 1, dtype=torch.float64)
    params = _per_task_params(model, 3)
    torch.testing.assert_close(batched_forward(model)(params, x), vmap_forward(model)(params, x))
    shared = dict(model.named_parameters())
    want = torch.cat([single_forward(model)(shared, x[t : t + 1]) for t in range(3)])
    torch.testing.assert_close(shared_forward(model)(shared, x), want)
