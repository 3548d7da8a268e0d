import math

import torch

from fewbit.evaluation import eval_tasks, evaluate, pixel_prototypes
from fewbit.report.metrics import mean_ci
from tests.data.synthetic import synthetic_dataset


def test_mean_ci_formula():
    r = mean_ci([0.0, 1.0, 1.0, 0.0])
    assert r.mean == 0.5
    assert math.isclose(r.ci95, 1.96 * 0.5 / 2)


def test_pixel_prototypes_solve_an_easy_dataset():
    ds = synthetic_dataset(alphabets=2, classes_per_alphabet=5, per_class=6)
    res = evaluate(pixel_prototypes, ds, ways=5, shots=1, queries=3, tasks=40)
    assert res.tasks == 40 and res.ways == 5 and res.shots == 1
    assert res.accuracy > 0.95
    assert len(res.per_task) == 40


def test_random_predictor_scores_chance():
    ds = synthetic_dataset(alphabets=2, classes_per_alphabet=5, per_class=6)
    g = torch.Generator().manual_seed(0)
    res = evaluate(lambda t: torch.rand(t.num_tasks, t.query_y.shape[1], t.ways, generator=g), ds,
                   ways=5, shots=1, queries=5, tasks=200)
    assert abs(res.accuracy - 0.2) < 3 * res.ci95 + 0.02


def test_same_seed_same_tasks_different_seed_different():
    ds = synthetic_dataset()
    a = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=5)])
    b = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=5, batch=3)])
    c = torch.cat([t.query_x for t in eval_tasks(ds, ways=3, shots=1, queries=2, tasks=10, seed=6)])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_regression_reports_mse():
    res = evaluate(lambda t: torch.zeros_like(t.query_y), None, shots=5, queries=10, tasks=50)
    assert res.metric == "mse"
    # E[(A sin)^2] = E[A^2]/2 with A ~ U[0.1, 5]: about 4.2
    assert 2.5 < res.value < 6.0
