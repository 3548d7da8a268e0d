import math

import torch

from fewbit.data.sinusoid import SinusoidSampler


def test_sinusoid_tasks_follow_the_family():
    t = SinusoidSampler(shots=10, queries=5, generator=torch.Generator().manual_seed(3)).sample(64)
    assert t.support_x.shape == (64, 10, 1) and t.query_y.shape == (64, 5, 1)
    x = torch.cat([t.support_x, t.query_x], 1)
    y = torch.cat([t.support_y, t.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5
    assert y.abs().max() <= 5
    # each task is one sinusoid: fit A, phase from two points and check the rest
    for i in range(4):
        a_sin, a_cos = torch.linalg.lstsq(
            torch.cat([torch.sin(x[i]), torch.cos(x[i])], 1).double(), y[i].double()
        ).solution.flatten().tolist()
        amp = math.hypot(a_sin, a_cos)
        assert 0.1 - 1e-6 <= amp <= 5 + 1e-6


def test_sinusoid_seeded():
    a = SinusoidSampler(shots=5, queries=5, generator=torch.Generator().manual_seed(0)).sample(3)
    b = SinusoidSampler(shots=5, queries=5, generator=torch.Generator().manual_seed(0)).sample(3)
    assert torch.equal(a.support_y, b.support_y)
