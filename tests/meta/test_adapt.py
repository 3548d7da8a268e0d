"""adapt(): a predictor from a support set, equal to the algorithm's predict."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fewbit.data.sinusoid import SinusoidSampler
from fewbit.errors import ConfigError
from fewbit.meta import AdaptedPredictor, MetaConfig, adapt, build_algorithm, meta_config
from fewbit.models import build_backbone

from .conftest import make_task


@pytest.mark.parametrize("name", ["maml", "anil", "protonet", "finetune", "reptile"])
def test_adapt_equals_predict(conv_model, name: str) -> None:
    task = make_task(tasks=1, ways=3, shots=2, queries=4, size=16)
    config = meta_config(name, finetune_steps=5) if name == "finetune" else meta_config(name)
    adapted = adapt(conv_model, (task.support_x[0], task.support_y[0]), config=config)
    assert isinstance(adapted, AdaptedPredictor)
    logits = adapted(task.query_x[0])
    assert logits.shape == (12, 3)
    expected = build_algorithm(config).predict(conv_model, dict(conv_model.named_parameters()), task)[0]
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(adapted.predict(task.query_x[0]), logits)
    batched = adapt(conv_model, task, algorithm=name, config=config)  # a Task: batched queries
    assert batched(task.query_x).shape == (1, 12, 3)


def test_adapt_metasgd_uses_the_learned_rates(conv_model) -> None:
    task = make_task(tasks=1, ways=3, shots=2, queries=4, size=16)
    algo = build_algorithm("metasgd")
    extras = algo.extra_parameters(conv_model)
    a = adapt(conv_model, task, algorithm=algo, extras=extras)(task.query_x)
    b = adapt(conv_model, task, algorithm="maml")(task.query_x)  # same init rate 0.4
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="inner_lr"):
        adapt(conv_model, task, algorithm=algo)(task.query_x)


def test_adapt_rejects_mismatched_support_and_algorithm(conv_model) -> None:
    x = torch.zeros(4, 1, 16, 16, dtype=torch.float64)
    with pytest.raises(ConfigError, match="disagree"):
        adapt(conv_model, (x, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ConfigError, match="disagrees"):
        adapt(conv_model, (x, torch.zeros(4, dtype=torch.long)), algorithm="anil", config=MetaConfig(algorithm="maml"))


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil"])
def test_regression_batched_equals_loop(name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone("mlp", ways=1, in_features=1, hidden=(6, 6)).double()
    task = SinusoidSampler(shots=5, queries=5).sample(3)
    task = dataclasses.replace(
        task, **{f: getattr(task, f).double() for f in ("support_x", "support_y", "query_x", "query_y")}
    )
    out = []
    for batched in (True, False):
        algo = build_algorithm(MetaConfig(algorithm=name, inner_steps=2, inner_lr=0.05, batched=batched))
        params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
        extras = {n: p.detach().clone().requires_grad_() for n, p in algo.extra_parameters(model).items()}
        step = algo.step(model, params, task, extras)
        assert step.accuracy is None
        grads = torch.autograd.grad(step.loss, list(params.values()) + list(extras.values()))
        out.append((step.loss, grads))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["maml", "anil"])
def test_adapt_keeps_a_compressed_models_fast_weights_compressed(name: str) -> None:
    """`fewbit.adapt` on a compressed model adapts as the shipped model does: after every inner step
    the fast weights go back onto the quantization grid (as in training and `fewbit eval`)."""
    import functools

    from fewbit.compress import compress_, project_params

    torch.manual_seed(0)
    model = compress_(build_backbone("conv4", ways=3, image_size=16, width=8), "quant:w2")
    task = make_task(tasks=1, ways=3, shots=2, queries=4, size=16, dtype=torch.float32)
    config = MetaConfig(algorithm=name, inner_steps=3, inner_lr=0.5)
    reference = build_algorithm(config, project=functools.partial(project_params, model))  # as training does
    expected = reference.predict(model, dict(model.named_parameters()), task)[0]
    got = adapt(model, (task.support_x[0], task.support_y[0]), config=config)(task.query_x[0])
    torch.testing.assert_close(got, expected)
    unprojected = build_algorithm(config).predict(model, dict(model.named_parameters()), task)[0]
    assert not torch.allclose(unprojected, expected)  # the projection matters here


def test_adapt_views_average_the_turned_tasks(conv_model) -> None:
    from fewbit.data.task import Task
    from fewbit.meta.views import view

    task = make_task(tasks=1, ways=3, shots=2, queries=4, size=16)
    config = MetaConfig(algorithm="protonet")
    support = (task.support_x[0], task.support_y[0])
    algo = build_algorithm(config)
    params = dict(conv_model.named_parameters())
    turned = [algo.predict(conv_model, params, Task(view(task.support_x, k), task.support_y, view(task.query_x, k),
                                                    task.query_y, task.ways))[0] for k in range(8)]
    logits = adapt(conv_model, support, config=config, views=8)(task.query_x[0])
    torch.testing.assert_close(logits, torch.stack(turned).mean(0))
    plain = adapt(conv_model, support, config=config)(task.query_x[0])
    assert not torch.allclose(logits, plain)  # the views change the scores of this asymmetric task
    with pytest.raises(ConfigError, match="views must be one of"):
        adapt(conv_model, support, config=config, views=3)
    features = torch.zeros(4, 6)
    with pytest.raises(ConfigError, match="square images"):
        adapt(build_backbone("mlp", ways=2, in_features=6), (features, torch.tensor([0, 1, 0, 1])),
              algorithm="protonet", views=8)
