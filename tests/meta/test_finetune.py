"""The fine-tune baseline: supervised step over global labels, new head per task at test time."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta import MetaConfig, build_algorithm, meta_config
from fewbit.meta.inner import task_loss

from .conftest import make_task, tiny_conv


@pytest.mark.parametrize("classifier", ["linear", "cosine"])
def test_finetune_supervised_step_over_global_labels(classifier: str) -> None:
    model = tiny_conv(ways=7)  # 7 training classes
    algo = build_algorithm(meta_config("finetune", finetune_classifier=classifier))
    assert not algo.episodic and algo.extra_parameters(model) == {}
    x = torch.randn(10, 1, 16, 16, dtype=torch.float64)
    out = algo.step_supervised(model, dict(model.named_parameters()), x, torch.randint(0, 7, (10,)))
    out.loss.backward()
    assert model.features[0][0].weight.grad is not None and model.head.weight.grad is not None
    assert out.accuracy is not None and out.grads is None


@pytest.mark.parametrize("classifier", ["linear", "cosine"])
def test_finetune_fits_a_new_head_per_task_batched_equals_loop(classifier: str) -> None:
    model = tiny_conv(ways=7, width=8)
    params = dict(model.named_parameters())
    task = make_task(tasks=4, ways=3, shots=5, queries=5, size=16)
    config = meta_config("finetune", finetune_classifier=classifier, finetune_steps=100)
    logits = {
        b: build_algorithm(dataclasses.replace(config, batched=b)).predict(model, params, task) for b in (True, False)
    }
    assert logits[True].shape == (4, 15, 3) and not logits[True].requires_grad
    torch.testing.assert_close(logits[True], logits[False], rtol=1e-6, atol=1e-6)
    assert float(logits[True].argmax(-1).eq(task.query_y).double().mean()) > 0.7
    # fitting lowers the support loss (0 steps: the initial head)
    on_support = Task(task.support_x, task.support_y, task.support_x, task.support_y, 3)
    before = build_algorithm(dataclasses.replace(config, finetune_steps=0)).predict(model, params, on_support)
    after = build_algorithm(config).predict(model, params, on_support)
    assert float(task_loss(after, task.support_y).mean()) < float(task_loss(before, task.support_y).mean()) - 0.2


def test_finetune_rejects_regression() -> None:
    from fewbit.data.sinusoid import SinusoidSampler
    from fewbit.models import build_backbone

    model = build_backbone("mlp", ways=1, in_features=1, hidden=(4,))
    with pytest.raises(ConfigError, match="classification"):
        build_algorithm(MetaConfig(algorithm="finetune")).predict(
            model, dict(model.named_parameters()), SinusoidSampler(shots=2, queries=2).sample(1)
        )
