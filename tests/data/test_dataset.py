import numpy as np
import pytest

from fewbit.data.dataset import ImageDataset, concat
from fewbit.data.splits import split_by_alphabet
from fewbit.errors import DataError
from tests.data.synthetic import synthetic_dataset


def test_info_counts():
    ds = synthetic_dataset(alphabets=3, classes_per_alphabet=5, per_class=7, size=10)
    info = ds.info()
    assert info["alphabets"] == 3
    assert info["classes"] == 15
    assert info["images"] == 105
    assert info["image_size"] == [10, 10]
    assert info["images_per_class_min"] == 7


def test_subset_alphabets_relabels_and_keeps_images():
    ds = synthetic_dataset(alphabets=3, classes_per_alphabet=4)
    sub = ds.subset_alphabets(["A2"])
    assert sub.num_classes == 4
    assert set(sub.labels.tolist()) == {0, 1, 2, 3}
    assert sub.alphabets == ("A2",)
    first = ds.classes.index("A2/char00")
    np.testing.assert_array_equal(sub.images[sub.labels == 0], ds.images[ds.labels == first])


def test_subset_unknown_alphabet_is_a_clear_error():
    with pytest.raises(DataError, match="no alphabet"):
        synthetic_dataset().subset_alphabets(["Klingon"])


def test_split_by_alphabet_is_disjoint_and_complete():
    ds = synthetic_dataset(alphabets=10, classes_per_alphabet=3)
    splits = split_by_alphabet(ds)
    parts = [set(splits[s].alphabets) for s in ("train", "val", "test")]
    assert all(parts)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert parts[0] | parts[1] | parts[2] == set(ds.alphabets)
    assert split_by_alphabet(ds)["test"].classes == splits["test"].classes  # deterministic


def test_split_needs_three_alphabets():
    with pytest.raises(DataError, match="alphabet"):
        split_by_alphabet(synthetic_dataset(alphabets=2))


def test_concat_rejects_colliding_class_names():
    ds = synthetic_dataset()
    with pytest.raises(DataError, match="collide"):
        concat([ds, ds], "twice")


def test_bad_arrays_rejected():
    with pytest.raises(DataError):
        ImageDataset("x", np.zeros((2, 3, 3), np.float32), np.zeros(2, np.int64), ("a",), ("A",))
