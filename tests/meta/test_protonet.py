"""ProtoNet logits are minus squared distances to class means; batched == loop."""

from __future__ import annotations

import torch

from fewbit.meta import MetaConfig, build_algorithm

from .conftest import make_task


def test_protonet_logits_are_minus_squared_distances_to_means(conv_model) -> None:
    task = make_task(tasks=2, ways=3, shots=2, queries=4, size=16)
    algo = build_algorithm(MetaConfig(algorithm="protonet"))
    logits = algo.predict(conv_model, dict(conv_model.named_parameters()), task)
    assert logits.shape == (2, 12, 3)
    for t in range(2):
        with torch.no_grad():  # one batch-norm batch per task: support then query
            z = conv_model(torch.cat([task.support_x[t], task.query_x[t]]), embed=True)
        zs, zq = z[:6], z[6:]
        means = torch.stack([zs[task.support_y[t] == c].mean(0) for c in range(3)])
        expected = -torch.cdist(zq, means).pow(2)
        torch.testing.assert_close(logits[t], expected, rtol=1e-9, atol=1e-9)


def test_protonet_batched_equals_loop_loss_and_grads(conv_model) -> None:
    task = make_task(tasks=3, ways=3, shots=2, queries=2, size=16)
    results = []
    for batched in (True, False):
        algo = build_algorithm(MetaConfig(algorithm="protonet", batched=batched))
        params = {n: p.detach().clone().requires_grad_() for n, p in conv_model.named_parameters()}
        out = algo.step(conv_model, params, task)
        grads = torch.autograd.grad(out.loss, [p for n, p in params.items() if not n.startswith("head.")])
        results.append((out.loss.detach(), grads, out.accuracy))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert float(results[0][2]) == float(results[1][2])
