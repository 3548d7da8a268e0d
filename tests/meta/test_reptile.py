"""Reptile: grads = params - mean over tasks of the SGD-adapted params."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fewbit.meta import MetaConfig, build_algorithm, meta_config
from fewbit.meta.inner import task_loss

from .conftest import make_task


@pytest.mark.parametrize("batched", [True, False])
def test_reptile_update_matches_its_formula(conv_model, batched: bool) -> None:
    task = make_task(tasks=3, ways=3, shots=2, queries=2, size=16)
    steps, lr = 3, 0.2
    algo = build_algorithm(meta_config("reptile", reptile_steps=steps, reptile_lr=lr, batched=batched))
    params = dict(conv_model.named_parameters())
    out = algo.step(conv_model, params, task)
    assert out.grads is not None and not out.loss.requires_grad
    adapted = []
    for t in range(task.num_tasks):  # plain SGD on support + query, by hand
        w = {n: p.detach().clone() for n, p in params.items()}
        x = torch.cat([task.support_x[t], task.query_x[t]])
        y = torch.cat([task.support_y[t], task.query_y[t]])
        for _ in range(steps):
            w = {n: v.requires_grad_() for n, v in w.items()}
            loss = task_loss(functional_call(conv_model, w, (x,)).unsqueeze(0), y.unsqueeze(0)).sum()
            g = torch.autograd.grad(loss, list(w.values()))
            w = {n: (v - lr * gi).detach() for (n, v), gi in zip(w.items(), g)}
        adapted.append(w)
    for n, p in params.items():
        expected = p.detach() - torch.stack([w[n] for w in adapted]).mean(0)
        torch.testing.assert_close(out.grads[n], expected, rtol=1e-9, atol=1e-12)


def test_reptile_regression_runs_and_predict_uses_inner_steps() -> None:
    from fewbit.data.sinusoid import SinusoidSampler
    from fewbit.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("mlp", ways=1, in_features=1, hidden=(8, 8))
    task = SinusoidSampler(shots=5, queries=5).sample(4)
    algo = build_algorithm(MetaConfig(algorithm="reptile", inner_steps=2, inner_lr=0.01))
    params = dict(model.named_parameters())
    out = algo.step(model, params, task)
    assert out.accuracy is None and set(out.grads) == {n for n, _ in model.named_parameters()}
    assert all(g.abs().sum() > 0 for g in out.grads.values())  # every parameter moves toward the tasks
    logits = algo.predict(model, params, task)
    assert logits.shape == (4, 5, 1)
    # predict adapts with `inner_steps` steps of the shared inner loop: two MSE steps by hand agree
    from torch.func import functional_call

    for t in range(task.num_tasks):
        w = {n: p.detach() for n, p in params.items()}
        for _ in range(2):
            w = {n: v.requires_grad_() for n, v in w.items()}
            pred = functional_call(model, w, (task.support_x[t],))
            loss = ((pred - task.support_y[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(w.values()))
            w = {n: (v - 0.01 * g).detach() for (n, v), g in zip(w.items(), grads)}
        expected = functional_call(model, w, (task.query_x[t],))
        torch.testing.assert_close(logits[t], expected, rtol=1e-5, atol=1e-6)
