import itertools
import random

import pytest

from fewbit.errors import ConfigError, LimitError
from fewbit.search.knapsack import best_choices


def _brute(costs, values, capacity):
    out = []
    for picks in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(costs[i][p] for i, p in enumerate(picks))
        if cost <= capacity:
            out.append((sum(values[i][p] for i, p in enumerate(picks)), cost, picks))
    return sorted(out)


@pytest.mark.parametrize("seed", range(60))
def test_top_k_equals_brute_force(seed):
    rng = random.Random(seed)
    layers = rng.randint(1, 4)
    costs = [[rng.randint(0, 30) for _ in range(rng.randint(1, 5))] for _ in range(layers)]
    values = [[rng.uniform(-1.0, 5.0) for _ in c] for c in costs]
    capacity, k = rng.randint(0, 80), rng.randint(1, 6)
    want = _brute(costs, values, capacity)
    got = best_choices(costs, values, capacity, k)
    assert len(got) == min(k, len(want))
    assert len({g.picks for g in got}) == len(got)  # k distinct plans
    for g, (value, _, _) in zip(got, want, strict=False):
        assert g.value == pytest.approx(value, abs=1e-9)
        assert g.cost == sum(costs[i][p] for i, p in enumerate(g.picks)) <= capacity
        assert g.value == pytest.approx(sum(values[i][p] for i, p in enumerate(g.picks)), abs=1e-9)


def test_nothing_fits_gives_no_plan():
    assert best_choices([[5, 6], [3]], [[0.0, 1.0], [0.0]], 7) == []
    assert best_choices([[1]], [[0.0]], -1) == []


def test_the_best_plan_may_spend_less_than_the_capacity():
    (best,) = best_choices([[1, 10]], [[0.0, 1.0]], 10)
    assert best.picks == (0,) and best.cost == 1


@pytest.mark.parametrize("costs,values,capacity,k,needle", [
    ([[1, 2]], [[0.0]], 5, 1, "as many costs as values"),
    ([[-1]], [[0.0]], 5, 1, "non-negative"),
    ([[1]], [[float("nan")]], 5, 1, "finite"),
    ([[1]], [[0.0]], 5, 0, "k must be"),
    ([[1]], [[0.0]], 2.5, 1, "capacity must be an integer"),
])
def test_bad_input_is_refused(costs, values, capacity, k, needle):
    with pytest.raises(ConfigError, match=needle):
        best_choices(costs, values, capacity, k)


def test_work_is_bounded_before_it_starts():
    with pytest.raises(LimitError, match="capacity"):
        best_choices([[1]], [[0.0]], 1 << 30)
    with pytest.raises(LimitError, match="cell updates"):
        best_choices([[1] * 200] * 200, [[0.0] * 200] * 200, 1 << 20, 16)
