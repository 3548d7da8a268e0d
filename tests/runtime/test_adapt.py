"""`fewbit.runtime.adapt`'s arguments: support labels are checked before anything is sized by them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fewbit.runtime as rt
from fewbit.errors import LimitError


@pytest.fixture(scope="module")
def model() -> rt.RuntimeModel:
    return rt.load("glyphs-conv4-w4")


def _peak_bytes(call) -> int:  # noqa: ANN001
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("label", [2**27, 10**9, 1e30])
def test_a_huge_label_is_refused_without_allocating_for_it(model: rt.RuntimeModel, label: float) -> None:
    """A label of 1e9 made a count per class: a 7.45 GiB allocation (2**27: 1 GiB)."""
    x = np.zeros((4, 1, 28, 28), np.float32)
    y = np.array([0, 1, label, 0])

    def adapt() -> None:
        with pytest.raises(ValueError, match="more classes than the 4 support images"):
            rt.adapt(model, x, y)

    assert _peak_bytes(adapt) < 1 << 20


@pytest.mark.parametrize(("labels", "match"), [
    ([0, 1, -3, 1], "got label -3"),
    ([0, 1, 0.5, 1], "must be integers"),
    ([0, 1, float("nan"), 1], "must be integers"),
    (["a", "b", "a", "b"], "must be integers"),
    ([0, 2, 0, 2], "each at least once"),
    ([0, 0, 0, 0], "at least two classes"),
])
def test_labels_must_be_the_classes_0_to_ways_minus_1(model: rt.RuntimeModel, labels: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rt.adapt(model, np.zeros((4, 1, 28, 28), np.float32), np.array(labels))


def test_labels_as_floats_or_booleans_of_whole_classes_are_taken(model: rt.RuntimeModel) -> None:
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    expected = rt.adapt(model, x, [0, 1, 0, 1]).predict(x)
    assert (rt.adapt(model, x, np.array([0.0, 1.0, 0.0, 1.0])).predict(x) == expected).all()
    assert (rt.adapt(model, x, np.array([False, True, False, True])).predict(x) == expected).all()


def test_a_task_whose_scores_would_not_fit_the_memory_limit_is_refused(model: rt.RuntimeModel,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fewbit.runtime import limits

    monkeypatch.setattr(limits, "MAX_BATCH_BYTES", 4 * 4 * 16 - 1)  # 4 images x 4 classes x 16 bytes, less one
    with pytest.raises(LimitError, match="a task of 4 classes and 4 support images needs"):
        rt.adapt(model, np.zeros((4, 1, 28, 28), np.float32), [0, 1, 2, 3])
