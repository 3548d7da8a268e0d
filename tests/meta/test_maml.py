"""MAML family: finite differences, batched == loop, FOMAML, Meta-SGD, ANIL."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.func import functional_call

from fewbit.data.task import Task
from fewbit.meta import MetaConfig, build_algorithm, meta_config
from fewbit.meta.inner import task_loss

from .conftest import make_task, tiny_conv, tiny_resnet


def meta_grads(algo, model, task, extras=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and the gradients w.r.t. params (and extras, prefixed by `extra:`)."""
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    extras = {n: p.detach().clone().requires_grad_() for n, p in (extras or {}).items()}
    out = algo.step(model, params, task, extras)
    names = list(params) + [f"extra:{n}" for n in extras]
    tensors = list(params.values()) + list(extras.values())
    grads = torch.autograd.grad(out.loss, tensors, allow_unused=True)
    return out.loss.detach(), {n: torch.zeros_like(t) if g is None else g for n, t, g in zip(names, tensors, grads)}


def loss_at(algo, model, params, task) -> float:
    with torch.no_grad():
        return float(algo.step(model, params, task, {}).loss)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("make_model", [tiny_conv, tiny_resnet], ids=["conv4-bn", "resnet12-bn"])
def test_second_order_meta_gradient_matches_finite_differences(batched: bool, make_model) -> None:
    model = make_model()
    size = 16
    task = make_task(tasks=2, ways=3, shots=2, queries=2, size=size)
    algo = build_algorithm(MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.3, batched=batched))
    _, grads = meta_grads(algo, model, task)
    base = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # directional derivatives along random directions
        direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in base.items()}
        eps = 1e-7  # the tiny ResNet's meta-loss is rough: larger steps see its curvature
        plus = loss_at(algo, model, {n: base[n] + eps * direction[n] for n in base}, task)
        minus = loss_at(algo, model, {n: base[n] - eps * direction[n] for n in base}, task)
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float((grads[n] * direction[n]).sum()) for n in base)
        assert abs(numeric - analytic) <= 2e-6 * max(1.0, abs(numeric)), (numeric, analytic)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metasgd", "anil"])
@pytest.mark.parametrize("make_model", [tiny_conv, tiny_resnet], ids=["conv4-bn", "resnet12-bn"])
def test_batched_equals_per_task_loop(algorithm: str, make_model) -> None:
    model = make_model()
    size = 16
    task = make_task(tasks=3, ways=3, shots=2, queries=3, size=size)
    config = MetaConfig(algorithm=algorithm, inner_steps=2, inner_lr=0.3)
    results = []
    for batched in (True, False):
        algo = build_algorithm(dataclasses.replace(config, batched=batched))
        extras = algo.extra_parameters(model)
        for p in extras.values():  # distinct per-entry rates
            p.data.uniform_(0.1, 0.5, generator=torch.Generator().manual_seed(0))
        results.append(meta_grads(algo, model, task, extras))
        logits = algo.predict(model, dict(model.named_parameters()), task, extras)
        results[-1] += (logits,)
    (loss_b, grads_b, logits_b), (loss_l, grads_l, logits_l) = results
    torch.testing.assert_close(loss_b, loss_l, rtol=1e-5, atol=1e-5)
    for n in grads_l:
        torch.testing.assert_close(grads_b[n], grads_l[n], rtol=1e-5, atol=1e-5, msg=n)
    torch.testing.assert_close(logits_b, logits_l, rtol=1e-5, atol=1e-5)


def test_batched_equals_loop_in_float32_conv4() -> None:
    model = tiny_conv(dtype=torch.float32)
    task = make_task(tasks=4, ways=3, shots=1, queries=3, size=16, dtype=torch.float32)
    out = []
    for batched in (True, False):
        algo = build_algorithm(MetaConfig(algorithm="maml", inner_steps=1, batched=batched))
        out.append(meta_grads(algo, model, task))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    for n in out[0][1]:
        torch.testing.assert_close(out[0][1][n], out[1][1][n], rtol=1e-4, atol=1e-5, msg=n)


def _support_loss(model, params, task: Task) -> torch.Tensor:
    return task_loss(functional_call(model, params, (task.support_x[0],)).unsqueeze(0), task.support_y).sum()


def test_fomaml_is_maml_without_the_second_order_term(conv_model) -> None:
    """One inner step: MAML grad = (I - lr H_support) g_query, FOMAML grad = g_query."""
    task = make_task(tasks=1, ways=3, shots=2, queries=3, size=16)
    lr = 0.3
    params = {n: p.detach() for n, p in conv_model.named_parameters()}
    _, maml = meta_grads(build_algorithm(MetaConfig(algorithm="maml", inner_lr=lr)), conv_model, task)
    _, fomaml = meta_grads(build_algorithm(MetaConfig(algorithm="fomaml", inner_lr=lr)), conv_model, task)
    # the query gradient at the fast weights, computed by hand
    p = {n: v.clone().requires_grad_() for n, v in params.items()}
    g_support = torch.autograd.grad(_support_loss(conv_model, p, task), list(p.values()))
    fast = {n: (v - lr * g).detach().requires_grad_() for (n, v), g in zip(params.items(), g_support)}
    query = task_loss(functional_call(conv_model, fast, (task.query_x[0],)).unsqueeze(0), task.query_y).sum()
    g_query = dict(zip(fast, torch.autograd.grad(query, list(fast.values()))))
    for n in params:
        torch.testing.assert_close(fomaml[n], g_query[n], rtol=1e-9, atol=1e-12)
    # the second-order term: - lr * H_support @ g_query (a Hessian-vector product)
    p = {n: v.clone().requires_grad_() for n, v in params.items()}
    gs = torch.autograd.grad(_support_loss(conv_model, p, task), list(p.values()), create_graph=True)
    hvp = torch.autograd.grad(gs, list(p.values()), grad_outputs=[g_query[n] for n in p])
    for n, h in zip(p, hvp):
        torch.testing.assert_close(maml[n], g_query[n] - lr * h, rtol=1e-8, atol=1e-11)
    assert any(float(h.abs().max()) > 1e-6 for h in hvp)  # the term is really there


def test_metasgd_learns_its_rates_and_uses_them(conv_model) -> None:
    task = make_task(tasks=2, ways=3, shots=2, queries=2, size=16)
    algo = build_algorithm(meta_config("metasgd", metasgd_init_lr=0.25))
    extras = algo.extra_parameters(conv_model)
    assert set(extras) == {f"inner_lr.{n}" for n, _ in conv_model.named_parameters()}
    assert all(float(v.detach().min()) == float(v.detach().max()) == 0.25 for v in extras.values())
    _, grads = meta_grads(algo, conv_model, task, extras)
    assert all(float(grads[f"extra:{n}"].abs().sum()) > 0 for n in extras)
    # a scalar-rate MAML with the same lr gives the same loss
    loss_maml, _ = meta_grads(build_algorithm(MetaConfig(algorithm="maml", inner_lr=0.25)), conv_model, task)
    loss_sgd, _ = meta_grads(algo, conv_model, task, extras)
    torch.testing.assert_close(loss_sgd, loss_maml)


def test_anil_adapts_only_the_head_and_equals_maml_with_head_scope(conv_model) -> None:
    task = make_task(tasks=2, ways=3, shots=2, queries=2, size=16)
    loss_anil, g_anil = meta_grads(build_algorithm(MetaConfig(algorithm="anil", inner_steps=2)), conv_model, task)
    config = MetaConfig(algorithm="maml", scope="head", inner_steps=2)
    maml = build_algorithm(config, project=lambda p: p)  # a projection disables the embed-once shortcut
    loss_maml, g_maml = meta_grads(maml, conv_model, task)
    torch.testing.assert_close(loss_anil, loss_maml)
    for n in g_maml:
        torch.testing.assert_close(g_anil[n], g_maml[n], rtol=1e-8, atol=1e-10)


def test_project_hook_runs_after_each_inner_step(conv_model, conv_task) -> None:
    calls = []

    def project(fast):
        calls.append(sorted(fast))
        return {n: (v.clamp(-0.05, 0.05) if n.endswith("weight") else v) for n, v in fast.items()}

    algo = build_algorithm(MetaConfig(algorithm="maml", inner_steps=3), project=project)
    loss = algo.step(conv_model, dict(conv_model.named_parameters()), conv_task).loss
    assert len(calls) == 3 and calls[0] == sorted(n for n, _ in conv_model.named_parameters())
    plain = build_algorithm(MetaConfig(algorithm="maml", inner_steps=3))
    assert float(loss.detach()) != float(
        plain.step(conv_model, dict(conv_model.named_parameters()), conv_task).loss.detach()
    )


def test_predict_needs_no_grad_and_returns_detached_logits(conv_model, conv_task) -> None:
    algo = build_algorithm(MetaConfig(algorithm="maml", inner_steps=1, eval_inner_steps=3))
    with torch.no_grad():
        logits = algo.predict(conv_model, dict(conv_model.named_parameters()), conv_task)
    assert logits.shape == (3, 6, 3) and not logits.requires_grad
    assert all(p.grad is None for p in conv_model.parameters())


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil"])
def test_task_chunks_give_the_same_loss_accuracy_and_grads(conv_model, algorithm: str) -> None:
    task = make_task(tasks=5, ways=3, shots=2, queries=2, size=16)
    results = []
    for chunk in (0, 2):
        algo = build_algorithm(MetaConfig(algorithm=algorithm, inner_steps=2, task_chunk=chunk))
        extras = algo.extra_parameters(conv_model)
        results.append(meta_grads(algo, conv_model, task, extras))
        params = dict(conv_model.named_parameters())
        results[-1] += (algo.step(conv_model, params, task, extras).accuracy,)
    (loss_a, grads_a, acc_a), (loss_b, grads_b, acc_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(acc_a, acc_b)
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-9, atol=1e-12, msg=n)


def test_task_chunks_pass_gradients_through_params_computed_from_leaves(conv_model) -> None:
    """Compression hands in params that are functions of outer-learned tensors (here a scale)."""
    task = make_task(tasks=4, ways=3, shots=1, queries=2, size=16)
    grads = []
    for chunk in (0, 3):
        scale = torch.ones((), dtype=torch.float64, requires_grad=True)
        params = {n: p * scale for n, p in conv_model.named_parameters()}
        algo = build_algorithm(MetaConfig(algorithm="maml", task_chunk=chunk))
        algo.step(conv_model, params, task).loss.backward()
        grads.append((scale.grad.clone(), conv_model.head.weight.grad.clone()))
        conv_model.zero_grad()
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-9, atol=1e-12)
