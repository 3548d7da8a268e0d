import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.data.episodes import EpisodeSampler, images_to_tensor
from fewbit.errors import ConfigError, DataError
from tests.data.synthetic import synthetic_dataset

DS = synthetic_dataset(alphabets=4, classes_per_alphabet=6, per_class=8, size=12)
IMAGES = images_to_tensor(DS.images)


def _source_class(x: torch.Tensor) -> int:
    """Which class an (unrotated) image came from: images are unique within the synthetic set."""
    match = (x == IMAGES).flatten(1).all(1).nonzero().flatten()
    return int(DS.labels[int(match[0])])


@settings(max_examples=25, deadline=None)
@given(
    ways=st.integers(1, 8),
    shots=st.integers(1, 4),
    queries=st.integers(0, 4),
    tasks=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_episode_counts_labels_and_classes(ways, shots, queries, tasks, seed):
    s = EpisodeSampler(DS, ways=ways, shots=shots, queries=queries, generator=torch.Generator().manual_seed(seed))
    t = s.sample(tasks)
    assert t.support_x.shape == (tasks, ways * shots, 1, 12, 12)
    assert t.query_x.shape == (tasks, ways * queries, 1, 12, 12)
    assert t.ways == ways
    for i in range(tasks):
        assert torch.bincount(t.support_y[i], minlength=ways).tolist() == [shots] * ways
        if queries:
            assert torch.bincount(t.query_y[i], minlength=ways).tolist() == [queries] * ways
        # every label is one source class, different labels are different classes
        label_class = {}
        for x, y in zip(torch.cat([t.support_x[i], t.query_x[i]]), torch.cat([t.support_y[i], t.query_y[i]])):
            c = _source_class(x)
            assert label_class.setdefault(int(y), c) == c
        assert len(set(label_class.values())) == ways
        # no image is both support and query
        flat_s = t.support_x[i].flatten(1)
        for q in t.query_x[i].flatten(1):
            assert not (flat_s == q).all(1).any()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_tasks(seed):
    a = EpisodeSampler(DS, ways=5, shots=2, queries=3, generator=torch.Generator().manual_seed(seed)).sample(4)
    b = EpisodeSampler(DS, ways=5, shots=2, queries=3, generator=torch.Generator().manual_seed(seed)).sample(4)
    c = EpisodeSampler(DS, ways=5, shots=2, queries=3, generator=torch.Generator().manual_seed(seed + 1)).sample(4)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_label_order_is_random_per_task():
    s = EpisodeSampler(DS, ways=5, shots=1, queries=0, generator=torch.Generator().manual_seed(0))
    t = s.sample(30)
    firsts = {_source_class(t.support_x[i, 0]) for i in range(30)}
    assert len(firsts) > 5  # label 0 is not always the same class


def test_rotations_make_new_classes():
    small = synthetic_dataset(alphabets=1, classes_per_alphabet=3, per_class=4, size=12)
    with pytest.raises(DataError):
        EpisodeSampler(small, ways=5, shots=1, queries=1)
    s = EpisodeSampler(small, ways=12, shots=1, queries=1, rotations=True, generator=torch.Generator().manual_seed(1))
    t = s.sample(1)
    flat = t.support_x[0].flatten(1)
    assert len({tuple(r.tolist()) for r in flat}) == 12  # 3 classes x 4 rotations, all different


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="24"):
        EpisodeSampler(DS, ways=25, shots=1, queries=1)
    with pytest.raises(DataError, match="shots \\+ queries"):
        EpisodeSampler(DS, ways=5, shots=5, queries=4)
    with pytest.raises(ConfigError, match="ways"):
        EpisodeSampler(DS, ways=0, shots=1, queries=1)
    with pytest.raises(ConfigError, match="shots"):
        EpisodeSampler(DS, ways=2, shots=-1, queries=1)
