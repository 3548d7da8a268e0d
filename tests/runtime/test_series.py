"""The one series rule shared by training data and the runtime: length rules, norms, validation, sample files."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fewbit.errors import DataError
from fewbit.runtime.series import (
    MAX_SERIES_CHANNELS,
    MAX_SERIES_FILE_BYTES,
    MAX_SERIES_LENGTH,
    SeriesPreprocessing,
    global_statistics,
    read_series_file,
)


def _raw(length: int, rule: str, *series: list[float]) -> np.ndarray:
    """The prepared values `[N, length]` of one-channel series, norm none."""
    pre = SeriesPreprocessing(channels=1, length=length, length_rule=rule, norm="none")
    out = pre.prepare([np.asarray(s, np.float64)[None] for s in series])
    assert out.dtype == np.float32 and out.shape == (len(series), 1, 1, length)
    return out[:, 0, 0]


# ------------------------------------------------------------------------------------ length rules


def test_resample_interpolates_over_the_span_keeping_both_ends() -> None:
    np.testing.assert_array_equal(_raw(5, "resample", range(9)), [[0, 2, 4, 6, 8]])
    np.testing.assert_array_equal(_raw(5, "resample", [0, 10]), [[0, 2.5, 5, 7.5, 10]])
    third = np.array([[1, 1 + 2 / 3, 2 + 2 / 3, 4]], np.float32)  # points at 0, 2/3, 4/3, 2
    np.testing.assert_array_equal(_raw(4, "resample", [1, 2, 4]), third)
    np.testing.assert_array_equal(_raw(3, "resample", [7]), [[7, 7, 7]])  # one sample: a constant
    np.testing.assert_array_equal(_raw(1, "resample", [0, 1, 2, 3]), [[1.5]])  # one point: the centre
    np.testing.assert_array_equal(_raw(3, "resample", [3, 1, 2]), [[3, 1, 2]])  # the length already: as is


def test_crop_centres_the_series_in_the_window() -> None:
    np.testing.assert_array_equal(_raw(5, "crop", range(9)), [[2, 3, 4, 5, 6]])  # start (9 - 5) // 2
    np.testing.assert_array_equal(_raw(5, "crop", range(6)), [[0, 1, 2, 3, 4]])  # start (6 - 5) // 2 = 0
    np.testing.assert_array_equal(_raw(4, "crop", range(7)), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(_raw(5, "crop", [1, 2]), [[0, 1, 2, 0, 0]])  # (5 - 2) // 2 = 1 zero before
    np.testing.assert_array_equal(_raw(6, "crop", [1, 2]), [[0, 0, 1, 2, 0, 0]])


def test_pad_aligns_at_the_start_and_crops_the_centre() -> None:
    np.testing.assert_array_equal(_raw(5, "pad", [1, 2]), [[1, 2, 0, 0, 0]])
    np.testing.assert_array_equal(_raw(5, "pad", range(9)), [[2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(_raw(3, "pad", [4, 5, 6]), [[4, 5, 6]])


def test_every_rule_keeps_channels_apart() -> None:
    x = np.array([[0.0, 1, 2, 3, 4, 5, 6, 7, 8], [10, 11, 12, 13, 14, 15, 16, 17, 18]])
    for rule, first in (("resample", [0, 2, 4, 6, 8]), ("crop", [2, 3, 4, 5, 6]), ("pad", [2, 3, 4, 5, 6])):
        out = SeriesPreprocessing(channels=2, length=5, length_rule=rule, norm="none").prepare([x])
        assert out.shape == (1, 2, 1, 5)
        np.testing.assert_array_equal(out[0, 0, 0], first)
        np.testing.assert_array_equal(out[0, 1, 0], np.array(first) + 10)


# ------------------------------------------------------------------------------------------- norms


def test_zscore_by_hand_and_flat_channels_are_exactly_zero() -> None:
    pre = SeriesPreprocessing(channels=2, length=4)
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.1, 0.1, 0.1, 0.1]])
    out = pre.prepare([x])[0, :, 0]
    sd = np.sqrt(1.25)  # population std of 1, 2, 3, 4
    np.testing.assert_allclose(out[0], [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd], rtol=1e-6)
    assert np.all(out[1] == 0.0)  # 0.1 repeated: the float64 mean of float32 values is exact
    big = np.full((2, 7), 3e38)  # near float32's largest: still a flat channel, not inf or NaN
    assert np.all(SeriesPreprocessing(channels=2, length=7).prepare([big]) == 0.0)


def test_zscore_statistics_exclude_the_padding() -> None:
    # [1, 2] has mean 1.5 and std 0.5: it becomes [-1, 1]; the padding is 0, the series' own mean.
    crop = SeriesPreprocessing(channels=1, length=5, length_rule="crop").prepare([np.array([[1.0, 2.0]])])
    np.testing.assert_array_equal(crop[0, 0, 0], [0, -1, 1, 0, 0])
    pad = SeriesPreprocessing(channels=1, length=5, length_rule="pad").prepare([np.array([[1.0, 2.0]])])
    np.testing.assert_array_equal(pad[0, 0, 0], [-1, 1, 0, 0, 0])


def test_global_norm_uses_the_stored_statistics() -> None:
    pre = SeriesPreprocessing(channels=2, length=3, norm="global", mean=(1.0, -2.0), std=(2.0, 0.5))
    out = pre.prepare([np.array([[1.0, 3.0, 5.0], [-2.0, -1.5, -3.0]])])[0, :, 0]
    np.testing.assert_array_equal(out, [[0, 1, 2], [0, 1, -2]])
    one = SeriesPreprocessing(channels=3, length=2, norm="global", mean=4.0, std=(2.0,))
    assert one.mean == (4.0,) * 3 and one.std == (2.0,) * 3


def test_fit_global_takes_the_picked_samples_without_padding() -> None:
    train = [np.array([[0.0, 2.0]]), np.array([[4.0, 6.0, 8.0, 10.0, 12.0, 14.0]])]  # crop picks 2..6 of the 2nd
    pre = SeriesPreprocessing(channels=1, length=3, length_rule="pad").fit_global(train)
    values = np.array([0.0, 2.0, 6.0, 8.0, 10.0])  # the long one centre-cropped to 6, 8, 10; no padding zero
    assert pre.norm == "global" and pre.mean == (values.mean(),) and pre.std == pytest.approx((values.std(),))
    out = pre.prepare([np.array([[0.0, 2.0]])])[0, 0, 0]
    np.testing.assert_allclose(out, [(0 - 5.2) / values.std(), (2 - 5.2) / values.std(), 0], rtol=1e-6)


def test_global_statistics_of_arrays_and_sequences() -> None:
    x = np.array([[[[1.0, 3.0]], [[10.0, 10.0]]], [[[5.0, 7.0]], [[10.0, 10.0]]]])  # [N=2, C=2, 1, L=2]
    mean, std = global_statistics(x)
    assert mean == (4.0, 10.0) and std[0] == pytest.approx(np.std([1, 3, 5, 7])) and std[1] == 1e-6  # floored
    assert global_statistics([np.array([[1.0, 3.0], [10, 10]]), np.array([[5.0], [10]])])[0] == (3.0, 10.0)
    with pytest.raises(DataError):
        global_statistics([])
    with pytest.raises(DataError):
        global_statistics(np.zeros((2, 3)))


def test_prepare_is_bit_stable() -> None:
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(3, t)) * 100 + 7 for t in (50, 128, 300, 128, 1)]
    for rule in ("resample", "crop", "pad"):
        for norm in ("zscore", "none"):
            pre = SeriesPreprocessing(channels=3, length=128, length_rule=rule, norm=norm)
            together = pre.prepare(series)
            alone = np.concatenate([pre.prepare([s]) for s in series])
            as_float32 = pre.prepare([s.astype(np.float32) for s in series])
            assert together.tobytes() == alone.tobytes() == pre.prepare(series).tobytes()
            assert together.tobytes() == as_float32.tobytes()  # inputs are cast to float32 first
    assert SeriesPreprocessing(channels=1, length=4).prepare([]).shape == (0, 1, 1, 4)


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channels": 0, "length": 8}, "preprocessing.channels"),
        ({"channels": MAX_SERIES_CHANNELS + 1, "length": 8}, "preprocessing.channels"),
        ({"channels": True, "length": 8}, "preprocessing.channels"),
        ({"channels": 1, "length": MAX_SERIES_LENGTH + 1}, "preprocessing.length"),
        ({"channels": 1, "length": 8.0}, "preprocessing.length"),
        ({"channels": 1, "length": 8, "length_rule": "stretch"}, "preprocessing.length_rule"),
        ({"channels": 1, "length": 8, "norm": "minmax"}, "preprocessing.norm"),
        ({"channels": 1, "length": 8, "mean": (1.0,), "std": (1.0,)}, "preprocessing.mean"),  # zscore takes none
        ({"channels": 2, "length": 8, "norm": "global"}, "preprocessing.mean"),
        ({"channels": 2, "length": 8, "norm": "global", "mean": (0.0, 0.0, 0.0), "std": (1.0,)}, "preprocessing.mean"),
        ({"channels": 1, "length": 8, "norm": "global", "mean": (0.0,), "std": (0.0,)}, "preprocessing.std"),
        ({"channels": 1, "length": 8, "norm": "global", "mean": (float("nan"),), "std": (1.0,)}, "preprocessing.mean"),
        ({"channels": 1, "length": 8, "norm": "global", "mean": (2e6,), "std": (1.0,)}, "preprocessing.mean"),
    ],
)
def test_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        SeriesPreprocessing(**kwargs)


def test_round_trip_through_the_manifest_form() -> None:
    import json

    pre = SeriesPreprocessing(channels=2, length=96, length_rule="pad", norm="global", mean=(0.5, -1), std=(2, 3))
    data = json.loads(json.dumps(pre.to_dict()))
    assert data["kind"] == "series" and SeriesPreprocessing.from_dict(data) == pre
    assert pre.input_shape == (2, 1, 96)
    plain = SeriesPreprocessing.from_dict({"channels": 3, "length": 128, "future_key": 1})  # unknown keys ignored
    assert plain == SeriesPreprocessing(channels=3, length=128) and plain.length_rule == "resample"
    with pytest.raises(ValueError, match=r"preprocessing\.length"):
        SeriesPreprocessing.from_dict({"channels": 3})
    with pytest.raises(ValueError, match=r"preprocessing\.kind"):
        SeriesPreprocessing.from_dict({"kind": "image", "channels": 1, "length": 8})
    with pytest.raises(ValueError, match="mapping"):
        SeriesPreprocessing.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (np.zeros((2, 10)), "has 2 channel(s), the model takes 3"),
        (np.zeros((3, 0)), "is empty"),
        (np.zeros((3, MAX_SERIES_LENGTH + 1), np.float32), "65,537 time steps"),
        (np.array([[0.0, np.nan]] * 3), "channel 0, time step 1 is NaN"),
        (np.array([[0.0, 1.0], [0.0, -np.inf], [0, 0]]), "channel 1, time step 1 is infinite"),
        (np.array([[0.0, 1.0], [0.0, 0.0], [0, 1e39]]), "beyond float32"),
        (np.ones((3, 4), bool), "not numbers"),
        (np.zeros((1, 3, 4)), "must be [channels, time]"),
    ],
)
def test_prepare_refuses_bad_series_in_one_line(series: np.ndarray, message: str) -> None:
    pre = SeriesPreprocessing(channels=3, length=16)
    with pytest.raises(DataError) as caught:
        pre.prepare([np.zeros((3, 5)), series], names=["a.csv", "b.csv"])
    text = str(caught.value)
    assert message in text and text.startswith("b.csv") and "\n" not in text


def test_a_one_dimensional_series_is_one_channel() -> None:
    out = SeriesPreprocessing(channels=1, length=3, norm="none").prepare([np.array([1.0, 2.0, 3.0])])
    np.testing.assert_array_equal(out[0, 0, 0], [1, 2, 3])


# ----------------------------------------------------------------------------------- sample files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2\n3,4\n5,6\n", [[1, 3, 5], [2, 4, 6]]),
        ("x,y\n1,2\n3,4\n", [[1, 3], [2, 4]]),  # a header of names, skipped
        ("x;y\n1,5;2\n3;4,25\n", [[1.5, 3], [2, 4.25]]),  # semicolons with decimal commas
        ("a\tb\tc\n1\t2\t3\n", [[1], [2], [3]]),
        ("value\n1\n2\n\n3\n", [[1, 2, 3]]),  # one column; an empty line skipped
        ("\ufeff1.5e1, -2\r\n 3 , 4\r\n", [[15, 3], [-2, 4]]),  # BOM, CRLF, spaces around cells
    ],
)
def test_csv_sample_files(tmp_path: Path, text: str, expected: list) -> None:
    (tmp_path / "s.csv").write_text(text, encoding="utf-8")
    values = read_series_file(tmp_path / "s.csv")
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array(expected, np.float32))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n3\n", "line 3: 1 cells, the first row has 2"),
        ("1,2\n3,abc\n", "line 2, column 2: 'abc' is not a number"),
        ("1,2\n3,\n", "line 2, column 2: an empty cell"),
        ("1,2\nnan,4\n", "line 2, column 1: NaN"),
        ("1,2\n3,inf\n", "line 2, column 2: infinite"),
        ("1,2\n3,1e39\n", "line 2, column 2: beyond float32"),
        ("x,y\n", "a header but no rows"),
        ("\n\n", "holds no rows"),
    ],
)
def test_bad_csv_sample_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(DataError) as caught:
        read_series_file(tmp_path / "s.csv")
    assert message in str(caught.value) and str(tmp_path / "s.csv") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_npy_sample_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(5, dtype=np.int16))
    np.testing.assert_array_equal(read_series_file(tmp_path / "a.npy"), [[0, 1, 2, 3, 4]])
    np.save(tmp_path / "b.npy", np.asfortranarray(np.arange(6.0).reshape(3, 2)))  # [T=3, C=2]
    np.testing.assert_array_equal(read_series_file(tmp_path / "b.npy"), [[0, 2, 4], [1, 3, 5]])
    np.save(tmp_path / "c.npy", np.arange(4, dtype=">f8"))
    assert read_series_file(tmp_path / "c.npy").dtype == np.float32


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1, "a"], dtype=object), "holds an array of object"),
        (np.ones(4, bool), "holds an array of bool"),
        (np.ones(4, complex), "holds an array of complex"),
        (np.zeros((2, 2, 2)), "shape [2, 2, 2]"),
        (np.zeros((3, 500)), "500 channels"),
        (np.array([1.0, np.nan]), "time step 1, channel 0 is NaN"),
        (np.zeros(0), "is empty"),
        (np.zeros(4, dtype=[("a", "f4")]), "a series file holds numbers"),
    ],
)
def test_bad_npy_sample_files_are_one_line(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "s.npy", array, allow_pickle=True)
    with pytest.raises(DataError) as caught:
        read_series_file(tmp_path / "s.npy")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def _npy_claiming(shape: tuple[int, ...], data: bytes = b"\0" * 64) -> bytes:
    """A valid .npy header claiming `shape` of float64, followed by `data` only."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_a_npy_claiming_a_huge_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    (tmp_path / "huge.npy").write_bytes(_npy_claiming((10**12,)))  # 8 TB claimed in a 200-byte file
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="1,000,000,000,000 time steps"):
            read_series_file(tmp_path / "huge.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the read buffer; allocating the claim would need 8 TB
    (tmp_path / "short.npy").write_bytes(_npy_claiming((1000, 4)))  # within limits, but 64 bytes of data
    with pytest.raises(DataError, match="truncated"):
        read_series_file(tmp_path / "short.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(DataError, match="not a readable .npy"):
        read_series_file(tmp_path / "junk.npy")


def test_a_line_with_a_million_columns_is_refused_before_splitting(tmp_path: Path) -> None:
    (tmp_path / "wide.csv").write_text("1," * 1_000_000 + "1\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="line 1: more than 64 columns"):
            read_series_file(tmp_path / "wide.csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # the 2 MB file, its text and its line; splitting it would take ~60 MB


def test_too_many_rows_or_bytes_are_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "long.csv").write_text("1\n" * (MAX_SERIES_LENGTH + 5))
    with pytest.raises(DataError, match="more than 65,536 rows"):
        read_series_file(tmp_path / "long.csv")
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(MAX_SERIES_FILE_BYTES + 1)  # sparse: refused from its size, never read
    with pytest.raises(DataError, match="bytes, more than"):
        read_series_file(big)


def test_fifos_devices_and_other_suffixes_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(DataError, match="not a regular file"):
        read_series_file(tmp_path / "pipe.csv")  # returns at once: never opened blocking
    os.symlink("/dev/zero", tmp_path / "zero.npy")
    with pytest.raises(DataError, match="not a regular file"):
        read_series_file(tmp_path / "zero.npy")
    (tmp_path / "s.txt").write_text("1\n")
    with pytest.raises(DataError, match=r"must be \.csv"):
        read_series_file(tmp_path / "s.txt")
    (tmp_path / "latin.csv").write_bytes(b"x\n\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_series_file(tmp_path / "latin.csv")


def test_reading_and_preparing_a_series_never_imports_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "s.csv").write_text("1,2\n3,4\n5,7\n")
    code = ("import sys; from fewbit.runtime.series import SeriesPreprocessing, read_series_file; "
            f"x = SeriesPreprocessing(channels=2, length=8).prepare([read_series_file({str(tmp_path / 's.csv')!r})]); "
            "assert x.shape == (1, 2, 1, 8); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
