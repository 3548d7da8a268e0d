"""A learning test that can fail: MAML on sinusoids beats the same inner step from a random init."""

from __future__ import annotations

import torch

from fewbit.data.sinusoid import SinusoidSampler
from fewbit.meta import MetaConfig, adapt, build_algorithm
from fewbit.models import build_backbone


def _sinusoid_mse(model, algo, tasks) -> float:
    params = dict(model.named_parameters())
    out = algo.predict(model, params, tasks)
    return float((out - tasks.query_y).pow(2).mean())


def test_maml_on_sinusoids_learns_a_better_initialisation() -> None:
    torch.manual_seed(0)
    make = lambda: build_backbone("mlp", ways=1, in_features=1, hidden=(40, 40))  # noqa: E731
    model, random_init = make(), make()
    config = MetaConfig(algorithm="maml", inner_steps=1, inner_lr=0.01)
    algo = build_algorithm(config)
    sampler = SinusoidSampler(shots=10, queries=10, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # a plain outer loop: Adam on the mean post-adaptation query MSE
        optimizer.zero_grad()
        algo.step(model, dict(model.named_parameters()), sampler.sample(10)).loss.backward()
        optimizer.step()
    test = SinusoidSampler(shots=10, queries=20, generator=torch.Generator().manual_seed(2)).sample(100)
    trained, baseline = _sinusoid_mse(model, algo, test), _sinusoid_mse(random_init, algo, test)
    assert trained < 0.6 * baseline, (trained, baseline)
    # adapt() runs the same inner loop as predict
    one = adapt(model, (test.support_x[0], test.support_y[0]), config=config)
    torch.testing.assert_close(one(test.query_x[0]), algo.predict(model, dict(model.named_parameters()), test[0])[0])
