"""The multiple-choice knapsack: one option per layer, total cost within a capacity, least total value.

Solved exactly by dynamic programming over integer costs (bytes), keeping the `k` best plans at
each exact total cost, so the `k` best plans overall come out together (a second-best plan is
the one to try when the best fails a later check). Costs are non-negative integers; values are
any finite floats (the estimated loss increase; smaller is better).

Work is `layers x options x k x (capacity + 1)` cell updates, bounded before it starts
(`MAX_CELLS`); memory is `layers x k x (capacity + 1)` back-pointers. A 48 KB budget over 5 layers
of 40 options with k = 8 (79 M updates) takes about 4 s in numpy on one core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fewbit.errors import ConfigError, LimitError

MAX_CELLS = 1 << 31  # layers x options x k x (capacity + 1), before any array is made
MAX_CAPACITY = 1 << 24


@dataclasses.dataclass(frozen=True)
class Choice:
    """One plan: `picks[i]` is the option of layer `i`; its total `cost` and `value`."""

    picks: tuple[int, ...]
    cost: int
    value: float


def best_choices(costs: Sequence[Sequence[int]], values: Sequence[Sequence[float]], capacity: int,
                 k: int = 1) -> list[Choice]:
    """The `k` plans of least total value whose total cost is at most `capacity`, best first
    (fewer when fewer fit; empty when none does). Ties are broken by lower cost."""
    if len(costs) != len(values) or any(len(c) != len(v) or not c for c, v in zip(costs, values, strict=False)):
        raise ConfigError("knapsack: every layer needs as many costs as values, at least one")
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise ConfigError(f"knapsack: capacity must be an integer, got {capacity!r}")
    if capacity < 0:
        return []
    if capacity > MAX_CAPACITY:
        raise LimitError(f"knapsack: capacity {capacity:,} is beyond {MAX_CAPACITY:,}; count in coarser units")
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"knapsack: k must be an integer >= 1, got {k!r}")
    work = sum(len(c) for c in costs) * k * (capacity + 1)
    if work > MAX_CELLS:
        raise LimitError(f"knapsack: {work:,} cell updates is beyond the limit of {MAX_CELLS:,}")
    cost_arrays = [np.asarray(c, dtype=np.int64) for c in costs]
    value_arrays = [np.asarray(v, dtype=np.float64) for v in values]
    if any((c < 0).any() for c in cost_arrays) or not all(np.isfinite(v).all() for v in value_arrays):
        raise ConfigError("knapsack: costs must be non-negative and values finite")
    size = capacity + 1
    best = np.full((k, size), np.inf)  # best[r, c]: the r-th least value of plans costing exactly c
    best[0, 0] = 0.0
    back_option: list[np.ndarray] = []  # per layer [k, size]: option picked, and the rank it extends
    back_rank: list[np.ndarray] = []
    for layer_costs, layer_values in zip(cost_arrays, value_arrays, strict=True):
        new = np.full((k, size), np.inf)
        opt = np.zeros((k, size), dtype=np.int32)
        rank = np.zeros((k, size), dtype=np.int32)
        for o, c in enumerate(int(x) for x in layer_costs):
            if c >= size:
                continue
            cand = np.full((k, size), np.inf)  # this option on top of each kept plan
            cand[:, c:] = best[:, : size - c] + layer_values[o]
            both = np.concatenate([new, cand])  # [2k, size]: kept so far, then this option's
            order = np.argsort(both, axis=0, kind="stable")[:k]
            from_new = order < k
            new = np.take_along_axis(both, order, axis=0)
            opt = np.where(from_new, np.take_along_axis(opt, np.minimum(order, k - 1), axis=0), o)
            rank = np.where(from_new, np.take_along_axis(rank, np.minimum(order, k - 1), axis=0), order - k)
        back_option.append(opt)
        back_rank.append(rank)
        best = new
    finite = np.argwhere(np.isfinite(best))  # (rank, cost) pairs
    if not len(finite):
        return []
    vals = best[finite[:, 0], finite[:, 1]]
    order = np.lexsort((finite[:, 1], vals))[:k]
    out = []
    for i in order:
        r, c = int(finite[i, 0]), int(finite[i, 1])
        picks = []
        for layer in range(len(cost_arrays) - 1, -1, -1):
            o = int(back_option[layer][r, c])
            picks.append(o)
            r, c = int(back_rank[layer][r, c]), c - int(cost_arrays[layer][o])
        out.append(Choice(tuple(reversed(picks)), int(finite[i, 1]), float(vals[i])))
    return out
