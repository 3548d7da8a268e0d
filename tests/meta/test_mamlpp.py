"""MAML++ (Antoniou et al. 2019): first-order warm-up, the annealed multi-step loss, per-step rates (LSLR)."""

from __future__ import annotations

import pytest
import torch

from fewbit.meta import MetaConfig, build_algorithm, meta_config
from fewbit.meta.inner import task_loss

from .conftest import make_task, tiny_conv


def _grads(config: MetaConfig, outer_step: int | None, extras=None):  # noqa: ANN001, ANN202
    model = tiny_conv()
    task = make_task(tasks=2, ways=3, shots=2, queries=2, size=16)
    algo = build_algorithm(config)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    extras = {n: p.detach().clone().requires_grad_() for n, p in (extras or {}).items()}
    out = algo.step(model, params, task, extras, outer_step=outer_step)
    tensors = list(params.values()) + list(extras.values())
    return out.loss.detach(), torch.autograd.grad(out.loss, tensors, allow_unused=True)


def _close(a, b) -> bool:  # noqa: ANN001
    return all(torch.allclose(x, y, rtol=1e-9, atol=1e-12) for x, y in zip(a, b) if x is not None)


def test_first_order_until_the_warm_up_ends_then_second_order() -> None:
    warm = meta_config("maml", inner_steps=2, inner_lr=0.3, first_order_steps=10)
    _, early = _grads(warm, outer_step=10)
    _, late = _grads(warm, outer_step=11)
    _, fo = _grads(MetaConfig(algorithm="fomaml", inner_steps=2, inner_lr=0.3), outer_step=None)
    _, so = _grads(MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.3), outer_step=None)
    assert _close(early, fo) and _close(late, so) and not _close(fo, so)


def test_multi_step_loss_anneals_to_the_last_step() -> None:
    config = meta_config("maml", inner_steps=3, inner_lr=0.3, multi_step_loss_steps=100)
    algo = build_algorithm(config)
    assert algo._step_weights(1) == pytest.approx([0.33, 0.33, 0.34], abs=0.01)
    assert sum(algo._step_weights(50)) == pytest.approx(1.0) and algo._step_weights(50)[-1] == pytest.approx(2 / 3)
    assert algo._step_weights(100) == pytest.approx([0.0, 0.0, 1.0]) and algo._step_weights(101) is None
    # the loss at outer step 1 is the mean of the query losses after each inner step
    model = tiny_conv()
    task = make_task(tasks=2, ways=3, shots=2, queries=2, size=16)
    params = dict(model.named_parameters())
    per_step = []
    plain = build_algorithm(MetaConfig(algorithm="maml", inner_steps=3, inner_lr=0.3))
    final = plain.adapted_outputs(model, params, task, {}, 3, False, per_step)
    assert len(per_step) == 3 and torch.equal(per_step[-1], final)
    expected = sum(w * task_loss(o, task.query_y) for w, o in zip(algo._step_weights(1), per_step)).mean()
    torch.testing.assert_close(algo.step(model, params, task, outer_step=1).loss, expected)
    torch.testing.assert_close(algo.step(model, params, task, outer_step=200).loss,
                               plain.step(model, params, task).loss)


def test_lslr_learns_a_rate_per_parameter_and_step() -> None:
    config = meta_config("maml", inner_steps=3, inner_lr=0.3, lslr=True)
    model = tiny_conv()
    algo = build_algorithm(config)
    extras = algo.extra_parameters(model)
    assert len(extras) == len(list(model.parameters())) and all(v.shape == (3,) for v in extras.values())
    loss, grads = _grads(config, None, extras)
    plain_loss, _ = _grads(MetaConfig(algorithm="maml", inner_steps=3, inner_lr=0.3), None)
    torch.testing.assert_close(loss, plain_loss)  # initial rates equal inner_lr: the same loss
    rate_grads = grads[len(list(model.parameters())):]
    assert all(g is not None and g.shape == (3,) and g.abs().sum() > 0 for g in rate_grads)
    with torch.no_grad():  # another rate for the last step changes what the inner loop does
        for v in extras.values():
            v[2] = 0.05
    changed, _ = _grads(config, None, extras)
    assert not torch.allclose(changed, loss)
