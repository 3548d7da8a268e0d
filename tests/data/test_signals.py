"""The signals family: shapes, determinism, families, idle channels, and classes neither trivial nor noise."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fewbit.data import signals
from fewbit.data.signals import FAMILY_SIZE, IDLE_NOISE, class_recipe, generate_signals
from fewbit.errors import DataError
from fewbit.runtime.series import SeriesPreprocessing


def _array(data) -> np.ndarray:
    return np.stack(data.series)


def test_the_default_set_takes_seconds_and_is_cached() -> None:
    start = time.perf_counter()
    data = generate_signals()
    took = time.perf_counter() - start
    assert took < 20.0  # about a second alone on one core
    assert len(data) == 600 * 20 and data.channels == 3 and data.length_min == data.length_max == 128
    assert len(data.classes) == 600 and len(set(data.groups)) == 60
    start = time.perf_counter()
    again = generate_signals()
    assert time.perf_counter() - start < 1.0 and again.series[0] is not data.series[0]
    assert again.series[0].base is data.series[0].base  # one cached array behind both
    with pytest.raises(ValueError, match="read-only"):
        again.series[0][0, 0] = 1.0  # callers cannot change what others share


def test_shapes_labels_and_families() -> None:
    data = generate_signals(classes=23, per_class=4, length=64, channels=2, seed=3)
    assert len(data) == 92 and all(s.shape == (2, 64) and s.dtype == np.float32 for s in data.series)
    assert data.labels[:5] == ["family000/signal0"] * 4 + ["family000/signal1"]
    assert data.labels[-1] == "family002/signal2" and data.groups[-1] == "family002"
    assert all(label.startswith(group + "/") for label, group in zip(data.labels, data.groups))
    assert data.class_sizes() == {c: 4 for c in data.classes}
    assert np.isfinite(_array(data)).all() and data.parts is None


def test_deterministic_and_independent_of_how_many_classes_are_made() -> None:
    a = _array(generate_signals(classes=12, per_class=5, length=96, seed=7))
    b = _array(generate_signals(classes=25, per_class=5, length=96, seed=7))
    signals._arrays.cache_clear()
    c = _array(generate_signals(classes=12, per_class=5, length=96, seed=7))
    assert a.tobytes() == c.tobytes()  # rebuilt from scratch: the same bits
    assert a.tobytes() == b[: len(a)].tobytes()  # more classes leave the first ones as they were
    d = _array(generate_signals(classes=12, per_class=5, length=96, seed=8))
    assert np.abs(a - d).mean() > 0.1


def test_classes_are_distinct_and_families_share_a_recipe() -> None:
    recipes = [class_recipe(i, seed=0, channels=3) for i in range(40)]
    kinds = [tuple(c.kind for c in r.components) for r in recipes]
    assert len({repr(r) for r in recipes}) == 40  # no two classes are the same recipe
    for f in range(4):  # a family's classes use its channels and mostly its kinds of component
        members = recipes[f * FAMILY_SIZE : (f + 1) * FAMILY_SIZE]
        assert len({r.used for r in members}) == 1
        base = set(kinds[f * FAMILY_SIZE])
        assert np.mean([len(base & set(k)) / len(base) for k in kinds[f * FAMILY_SIZE : (f + 1) * FAMILY_SIZE]]) > 0.5
    # Class means: each class's own mean is nearer its samples than any other class's mean, for most samples.
    data = generate_signals(classes=60, per_class=10, length=128)
    x = SeriesPreprocessing(channels=3, length=128).prepare(data.series).reshape(60, 10, -1)
    means = x.mean(axis=1)  # [60, F]
    d = ((x[:, :, None, :] - means[None, None]) ** 2).sum(-1)  # [60 classes, 10, 60 means]
    assert (d.argmin(-1) == np.arange(60)[:, None]).mean() > 0.8


def test_unused_channels_are_low_noise() -> None:
    data = generate_signals(classes=30, per_class=6, length=128, channels=5)
    x = _array(data).reshape(30, 6, 5, 128)
    for i in range(30):
        used = class_recipe(i, seed=0, channels=5).used
        assert 1 <= len(used) <= 3
        idle = [c for c in range(5) if c not in used]
        assert x[i][:, idle].std(axis=-1).max() < 3 * IDLE_NOISE
        assert x[i][:, list(used)].std(axis=-1).mean() > 3 * IDLE_NOISE
    one = generate_signals(classes=10, per_class=2, length=32, channels=1)
    assert one.channels == 1 and all(class_recipe(i, channels=1).used == (0,) for i in range(10))


def _nn1_accuracy(x: np.ndarray, *, within_family: bool, tasks: int = 200, ways: int = 5, shots: int = 5,
                  queries: int = 5) -> float:
    """Mean 1-NN Euclidean accuracy on seeded `ways`-way tasks from `x` `[classes, per_class, F]`."""
    rng = np.random.default_rng(0)
    classes, per_class = x.shape[:2]
    hits = []
    for _ in range(tasks):
        if within_family:
            family = rng.integers(classes // FAMILY_SIZE)
            picked = family * FAMILY_SIZE + rng.choice(FAMILY_SIZE, ways, replace=False)
        else:
            picked = rng.choice(classes, ways, replace=False)
        draws = np.stack([rng.permutation(per_class)[: shots + queries] for _ in picked])
        support = np.concatenate([x[c, d[:shots]] for c, d in zip(picked, draws)])
        query = np.concatenate([x[c, d[shots:]] for c, d in zip(picked, draws)])
        nearest = ((query[:, None] - support[None]) ** 2).sum(-1).argmin(1) // shots
        hits.append(np.mean(nearest == np.repeat(np.arange(ways), queries)))
    return float(np.mean(hits))


def test_classes_are_neither_trivial_nor_noise() -> None:
    data = generate_signals(classes=200, per_class=10, length=128)
    x = SeriesPreprocessing(channels=3, length=128).prepare(data.series).reshape(200, 10, -1)
    across = _nn1_accuracy(x, within_family=False)
    within = _nn1_accuracy(x, within_family=True)
    assert 0.6 < across < 0.97, across  # chance is 0.2; a perfect score would teach a model nothing
    assert 0.4 < within < across, (within, across)  # classes of one family are the harder tasks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 0}, "classes must be a whole number"),
        ({"length": 8}, "length must be a whole number 16.."),
        ({"channels": 0}, "channels must be"),
        ({"per_class": True}, "per_class must be"),
        ({"seed": -1}, "seed must be"),
        ({"classes": 100_000, "per_class": 100, "length": 1000}, "more than the 1,000,000 series"),
    ],
)
def test_bad_arguments_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        generate_signals(**kwargs)
