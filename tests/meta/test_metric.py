"""Meta-Baseline (cosine prototypes, learned temperature) and SimpleShot (CL2N nearest class mean)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewbit.meta import MetaConfig, build_algorithm, meta_config
from fewbit.meta.protonet import embed_tasks, prototypes

from .conftest import make_task, tiny_conv


def test_metabaseline_scores_by_temperature_times_cosine() -> None:
    model = tiny_conv()
    task = make_task(tasks=2, ways=3, shots=2, queries=4, size=16)
    algo = build_algorithm(meta_config("metabaseline", cosine_scale=7.0))
    extras = algo.extra_parameters(model)
    assert float(extras["temperature"].detach()) == 7.0
    params = dict(model.named_parameters())
    z = embed_tasks(model, params, torch.cat([task.support_x, task.query_x], 1))
    protos = prototypes(z[:, :6], task.support_y, 3)
    expected = 7.0 * F.normalize(z[:, 6:], dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    torch.testing.assert_close(algo.predict(model, params, task, extras), expected)
    out = algo.step(model, {n: p.detach().requires_grad_() for n, p in params.items()}, task, extras)
    (grad,) = torch.autograd.grad(out.loss, [extras["temperature"]])
    assert grad.abs() > 0  # the temperature is learned
    assert not algo.uses_trained_head and algo.test_scope == "none"


def test_simpleshot_is_nearest_mean_of_centred_unit_embeddings() -> None:
    model = tiny_conv(ways=5)
    task = make_task(tasks=2, ways=3, shots=2, queries=4, size=16)
    algo = build_algorithm(MetaConfig(algorithm="simpleshot"))
    params = dict(model.named_parameters())
    z = embed_tasks(model, params, torch.cat([task.support_x, task.query_x], 1))
    z = F.normalize(z - z[:, :6].mean(1, keepdim=True), dim=-1)
    protos = prototypes(z[:, :6], task.support_y, 3)
    expected = -(z[:, 6:].unsqueeze(2) - protos.unsqueeze(1)).pow(2).sum(-1)
    torch.testing.assert_close(algo.predict(model, params, task), expected)
    assert not algo.episodic and not algo.uses_trained_head  # trained as a classifier, tested without its head
    x, y = torch.randn(8, 1, 16, 16, dtype=torch.float64), torch.arange(5).repeat(2)[:8]
    assert algo.step_supervised(model, params, x, y).loss.requires_grad
