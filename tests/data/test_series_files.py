"""Collections of labelled series: every layout read_series_source knows, its bounds and its one-line errors."""

from __future__ import annotations

import os
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from fewbit.data import series_files
from fewbit.data.series_files import (
    MAX_SOURCE_BYTES,
    SeriesCollection,
    read_series_source,
)
from fewbit.errors import DataError


def _csv(values: np.ndarray) -> str:
    """A sample file: rows are time steps, columns channels (`values` is `[C, T]`)."""
    return "\n".join(",".join(repr(float(v)) for v in row) for row in np.asarray(values).T) + "\n"


def _one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text
    return text


def _ts(header: str, lines: list[str]) -> str:
    return f"# a comment\n% another\n{header.strip()}\n@data\n" + "\n".join(lines) + "\n"


UNI_HEADER = """@problemName Toy
@timeStamps false
@missing true
@univariate true
@equalLength false
@classLabel true a b c"""

MULTI_HEADER = """@problemName Toy3
@timeStamps false
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down"""


# -------------------------------------------------------------------------------------------- .ts


def test_ts_univariate_equal_length(tmp_path: Path) -> None:
    path = tmp_path / "toy.ts"
    path.write_text(_ts(UNI_HEADER, ["1,2,3,4:a", "4,3,2,1:b", "0.5,0.25,1e2,-3:c", "1,1,1,1:a"]))
    data = read_series_source(path)
    assert isinstance(data, SeriesCollection) and len(data) == 4
    assert data.labels == ["a", "b", "c", "a"] and data.channels == 1 and data.length_min == data.length_max == 4
    np.testing.assert_array_equal(data.series[2], [[0.5, 0.25, 100, -3]])
    assert all(s.dtype == np.float32 for s in data.series)
    assert data.origins == ["toy.ts"] * 4 and data.notes["classes"] == 3 and data.notes["format"] == "ts"


def test_ts_multivariate_unequal_length_with_trailing_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "toy3.ts"
    lines = ["1,2,3:4,5,6:up", "1,2,?,?:3,4,?,?:down", "7,8,9,10,11:1,2,3,4,5:down", "1,2:3,4:up"]
    path.write_text(_ts(MULTI_HEADER, lines))
    data = read_series_source(path)
    assert [s.shape for s in data.series] == [(2, 3), (2, 2), (2, 5), (2, 2)]
    np.testing.assert_array_equal(data.series[1], [[1, 2], [3, 4]])  # the trailing ? padding trimmed
    assert (data.length_min, data.length_max, data.channels) == (2, 5, 2)


@pytest.mark.parametrize(
    ("header", "line", "message"),
    [
        (MULTI_HEADER, "1,?,3:4,5,6:up", "line 11, dimension 1, value 2: a missing value inside the series"),
        (MULTI_HEADER, "1,2,3:4,5:up", "line 11, dimension 2, value 3: a missing value"),  # one dimension short
        (MULTI_HEADER, "1,2,3:up", "line 11: 1 dimension(s), the header says 2"),
        (MULTI_HEADER, "1,2,3:4,x,6:up", "line 11, dimension 2, value 2: 'x' is not a number"),
        (MULTI_HEADER, "1,2,3:4,5,inf:up", "line 11, dimension 2, value 3: infinite"),
        (MULTI_HEADER, "1,2,3:4,5,6:sideways", "label 'sideways' is not among @classLabel"),
        (MULTI_HEADER, "1,2,3:4,5,6:", "the label after the last ':' is empty"),
        (MULTI_HEADER, "1,2,3", "no ':label'"),
        (MULTI_HEADER, "?,?:?,?:up", "every value is missing"),
        (UNI_HEADER.replace("@timeStamps false", "@timeStamps true"), "(1,2):a", "@timeStamps true"),
        (UNI_HEADER, "(0,1),(1,2):a", "(time,value) pairs are not read"),
        (UNI_HEADER.replace("@classLabel true a b c", "@targetLabel true"), "1,2:0.5", "regression targets"),
        (UNI_HEADER.replace("@classLabel true a b c", "@classLabel false"), "1,2", "holds no class labels"),
        (UNI_HEADER.replace("@classLabel true a b c", ""), "1,2:a", "has no @classLabel"),
    ],
)
def test_bad_ts_files_are_one_line(tmp_path: Path, header: str, line: str, message: str) -> None:
    path = tmp_path / "bad.ts"
    path.write_text(_ts(header, ["1,2,3:4,5,6:up" if "dimensions" in header else "1,2,3:a", line]))
    with pytest.raises(DataError) as caught:
        read_series_source(path)
    _one_line(caught, str(path), message)


def test_a_ts_file_without_data_or_with_text_before_it(tmp_path: Path) -> None:
    (tmp_path / "a.ts").write_text(UNI_HEADER + "\n")
    with pytest.raises(DataError, match="no @data line"):
        read_series_source(tmp_path / "a.ts")
    (tmp_path / "b.ts").write_text("hello\n@data\n1:a\n")
    with pytest.raises(DataError, match="line 1: expected a @keyword"):
        read_series_source(tmp_path / "b.ts")


# -------------------------------------------------------------------------------------- UCR text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Toy_TRAIN.tsv", "1\t0.5\t1.5\t2\n2\t3\t4\tNaN\n1\t-1\t-2\t-3\n"),
        ("toy.txt", "1.0000000e+00,0.5,1.5,2\n2.0000000e+00,3,4,NaN\n1.0000000e+00,-1,-2,-3\n"),
        ("toy2.txt", "  1.0000000e+00   5.0000000e-01  1.5  2\n 2  3 4 NaN\n  1 -1 -2 -3  \n"),
        ("Toy_TRAIN", "1,0.5,1.5,2\n2,3,4,\n1,-1,-2,-3\n"),  # no suffix (the 2015 archive); an empty trailing cell
        ("toy.csv", "1,0.5,1.5,2\n2,3,4,NaN\n1,-1,-2,-3\n"),  # a .csv without a header: UCR text
    ],
)
def test_ucr_text_with_trailing_nan_padding(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    data = read_series_source(tmp_path / name)
    assert data.labels == ["1", "2", "1"]  # float-written integral labels become integers
    assert [s.shape for s in data.series] == [(1, 3), (1, 2), (1, 3)]
    np.testing.assert_array_equal(data.series[1], [[3, 4]])
    assert data.notes["format"] == "ucr"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,1,2\n2,NaN,3\n", "line 2, column 2: a missing value inside the series"),
        ("1,1,2\n2,3,x\n", "line 2, column 3: 'x' is not a number"),
        ("1,1,2\n2\n", "line 2: a label and no values"),
        ("1,1,2\n,3,4\n", "line 2: the label (first column) is empty"),
        ("1,1,2\n2,3,-inf\n", "line 2, column 3: infinite"),
        ("1,1,2\n2,3,1e300\n", "beyond float32's range"),
        ("1,1,2\n1,3,4\n", "1 class(es); few-shot tasks need at least 2"),
        ("\n\n", "holds no series"),
    ],
)
def test_bad_ucr_text_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path / "t.txt")
    _one_line(caught, message)


def test_a_line_with_a_million_values_is_refused_before_splitting(tmp_path: Path) -> None:
    (tmp_path / "wide.txt").write_text("1,0\n2" + ",0.5" * 1_000_000 + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="line 2: more than 65,536 values"):
            read_series_source(tmp_path / "wide.txt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # the 4 MB file, its text, its line; a million cells split would take ~60 MB
    (tmp_path / "wide.ts").write_text(_ts(UNI_HEADER, ["1" + ",1" * 70_000 + ":a"]))
    with pytest.raises(DataError, match="dimension 1: more than 65,536 values"):
        read_series_source(tmp_path / "wide.ts")


def test_a_file_over_the_byte_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.ts"
    with open(path, "wb") as f:
        f.truncate(MAX_SOURCE_BYTES + 1)  # sparse: refused from its size
    start = time.perf_counter()
    with pytest.raises(DataError, match="bytes, more than"):
        read_series_source(path)
    assert time.perf_counter() - start < 1.0


def test_series_count_and_value_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.txt").write_text("".join(f"{i % 3},1,2,3\n" for i in range(12)))
    monkeypatch.setattr(series_files, "MAX_SERIES_COUNT", 10)
    with pytest.raises(DataError, match="more than 10 series"):
        read_series_source(tmp_path / "t.txt")
    monkeypatch.setattr(series_files, "MAX_SERIES_COUNT", 100)
    monkeypatch.setattr(series_files, "MAX_TOTAL_VALUES", 30)
    with pytest.raises(DataError, match="more than 30 values"):
        read_series_source(tmp_path / "t.txt")


# --------------------------------------------------------------------------------- archive folders


def test_an_archive_folder_pools_train_and_test(tmp_path: Path) -> None:
    root = tmp_path / "Toy"
    root.mkdir()
    (root / "Toy_TRAIN.ts").write_text(_ts(UNI_HEADER, ["1,2,3:a", "3,2,1:b"]))
    (root / "Toy_TEST.ts").write_text(_ts(UNI_HEADER, ["1,2,4:a", "4,2,1:c", "0,0,1:c"]))
    (root / "Toy_TRAIN.tsv").write_text("9\t9\t9\n")  # the same part in another format: the .ts is read
    (root / "README.md").write_text("about Toy\n")
    data = read_series_source(root)
    assert data.labels == ["a", "b", "a", "c", "c"] and data.parts is None  # one pool of classes
    assert data.origins == ["Toy_TRAIN.ts"] * 2 + ["Toy_TEST.ts"] * 3
    assert data.notes["files"] == {"Toy_TRAIN.ts": 2, "Toy_TEST.ts": 3}
    assert data.notes["ignored_files"] == ["Toy_TRAIN.tsv"] and data.notes["problem"] == "Toy"
    only_text = tmp_path / "Text"
    only_text.mkdir()
    (only_text / "Text_TRAIN.tsv").write_text("1\t1\t2\n2\t3\t4\n")
    (only_text / "Text_TEST").write_text("1 5 6\n3 7 8\n")
    assert read_series_source(only_text).labels == ["1", "2", "1", "3"]


def test_an_archive_folder_of_several_problems_is_refused(tmp_path: Path) -> None:
    for name in ("Toy", "Toy_eq"):
        (tmp_path / f"{name}_TRAIN.ts").write_text(_ts(UNI_HEADER, ["1,2,3:a", "3,2,1:b"]))
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path)
    _one_line(caught, "holds several problems (Toy, Toy_eq)", "give one file, or a folder of one problem")
    (tmp_path / "Toy_eq_TRAIN.ts").unlink()
    (tmp_path / "Toy_TEST.txt").write_text("a,1,2\nb,3,4\n")  # two channels would mismatch; here one: fine
    assert len(read_series_source(tmp_path)) == 4


def test_a_folder_of_problem_folders_says_to_pick_one(tmp_path: Path) -> None:
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}_TRAIN.ts").write_text(_ts(UNI_HEADER, ["1,2,3:a"]))
    with pytest.raises(DataError, match="archive files in subfolders"):
        read_series_source(tmp_path)


# ----------------------------------------------------------------------------------- class folders


def _samples(root: Path, layout: dict[str, int], channels: int = 2, length: int = 6) -> None:
    rng = np.random.default_rng(0)
    for k, (cls, n) in enumerate(layout.items()):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            values = rng.normal(size=(channels, length + i)) + k
            if i % 2:
                np.save(folder / f"s{i}.npy", values.T)  # [T, C]
            else:
                (folder / f"s{i}.csv").write_text("x,y\n" + _csv(values) if channels == 2 else _csv(values))


def test_flat_class_folders_of_csv_and_npy(tmp_path: Path) -> None:
    _samples(tmp_path, {"walk": 3, "run": 2, "sit": 1})
    (tmp_path / "walk" / "._s0.csv").write_text("junk")  # a macOS fork: skipped silently
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "x.csv").write_text("junk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        data = read_series_source(tmp_path)
    assert data.labels == ["run", "run", "sit", "walk", "walk", "walk"]  # sorted classes, sorted files
    assert data.origins == ["run/s0.csv", "run/s1.npy", "sit/s0.csv", "walk/s0.csv", "walk/s1.npy", "walk/s2.csv"]
    assert data.groups is None and data.parts is None and data.channels == 2
    assert data.notes["classes_with_one_series"] == 1  # kept
    expected = np.load(tmp_path / "walk" / "s1.npy").T.astype(np.float32)
    np.testing.assert_array_equal(data.series[4], expected)


def test_grouped_class_folders(tmp_path: Path) -> None:
    _samples(tmp_path, {"armA/grip": 2, "armA/lift": 2, "armB/grip": 2})
    data = read_series_source(tmp_path)
    assert data.labels == ["armA/grip"] * 2 + ["armA/lift"] * 2 + ["armB/grip"] * 2
    assert data.groups == ["armA"] * 4 + ["armB"] * 2 and "grouped" in data.notes["layout"]


def test_class_folders_in_train_val_test(tmp_path: Path) -> None:
    _samples(tmp_path, {"train/a": 2, "train/b": 2, "val/c": 2, "test/a": 2, "test/d": 1})
    (tmp_path / "notes.csv").write_text("1\n")  # beside the part folders: skipped with a warning
    with pytest.warns(UserWarning, match="notes.csv"):
        data = read_series_source(tmp_path)
    assert data.parts == ["train"] * 4 + ["val"] * 2 + ["test"] * 3
    assert data.labels[-3:] == ["test/a", "test/a", "test/d"]  # a class name in two parts is two classes
    assert set(data.labels) == {"train/a", "train/b", "val/c", "test/a", "test/d"}


def test_unreadable_samples_fifos_and_devices_are_skipped_with_a_warning(tmp_path: Path) -> None:
    _samples(tmp_path, {"a": 2, "b": 2}, channels=1)
    (tmp_path / "a" / "bad.csv").write_text("1\n2\nx\n")
    os.mkfifo(tmp_path / "b" / "pipe.csv")
    os.symlink("/dev/zero", tmp_path / "b" / "zero.npy")
    (tmp_path / "b" / "readme.md").write_text("hi")
    with pytest.warns(UserWarning) as caught:
        data = read_series_source(tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert "bad.csv line 3, column 1: 'x' is not a number" in text
    assert "pipe.csv (not a regular file)" in text and "zero.npy (not a regular file)" in text
    assert "readme.md" in text
    assert len(data) == 4 and data.notes["unreadable_files"] == 1


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"train/a": 1, "val/b": 1}, "has train/val/ folders but no test/"),
        ({"a": 1, "g/b": 1}, "mixes <class>/<sample>"),
        ({"a": 1}, "1 class(es)"),
    ],
)
def test_bad_class_folders_are_one_line(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    _samples(tmp_path, layout)
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path)
    _one_line(caught, message)


def test_class_folders_need_one_channel_count_and_some_samples(tmp_path: Path) -> None:
    _samples(tmp_path / "one", {"a": 1}, channels=1)
    _samples(tmp_path / "one", {"b": 1}, channels=2)
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path / "one")
    _one_line(caught, "has 2 channel(s)", "has 1", "every sample needs the same channels")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="no .csv or .npy series files"):
        read_series_source(tmp_path / "empty")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "x.csv").write_text("1\n")
    with pytest.raises(DataError, match="no class folders with series files"):
        read_series_source(tmp_path / "loose")


# ------------------------------------------------------------------------------------- CSV tables


def test_wide_csv_with_a_named_label_column(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("t0,t1,t2,Class\n1,2,3,up\n4,5,,down\n7,8,9,up\n")  # an empty trailing cell: padding
    data = read_series_source(path)
    assert data.labels == ["up", "down", "up"] and [s.shape[1] for s in data.series] == [3, 2, 3]
    assert "label column 'Class'" in data.notes["layout"]
    path.write_text("label;0;1;2\nup;1;2;3\ndown;4;5;6\n")  # semicolons; numeric time-step names
    assert read_series_source(path).labels == ["up", "down"]
    path.write_text("a,b,c,kind\n1,2,3,x\n4,5,6,y\n")  # no label-like name: the last column
    assert read_series_source(path).labels == ["x", "y"]
    path.write_text("activity,0,1,2\nup,1,2,3\ndown,4,5,6\n")  # time steps named 0, 1, 2: a header,
    assert read_series_source(path).labels == ["up", "down"]  # and the one other column the labels
    path.write_text("kind,a,b\nx,1,2\ny,3,4\n")
    data = read_series_source(path, label_column="kind")
    assert data.labels == ["x", "y"] and data.series[1].tolist() == [[3, 4]]


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("t0,t1,label\n1,2,a\n3,x,b\n", {}, "line 3, column 't1': 'x' is not a number"),
        ("t0,t1,label\n1,2,a\n3,b\n", {}, "line 3: 2 cells, the header has 3"),
        ("t0,t1,label\n1,2,a\n,3,b\n", {}, "line 3, column 't0': a missing value inside the series"),
        ("t0,t1,label\n1,2,a\n3,4,\n", {}, "line 3: the label ('label') is empty"),
        ("t0,t1,label\n1,2,a\n", {"label_column": "kind"}, "no column 'kind' for the labels"),
        ("t0,t1,t0\n1,2,a\n", {}, "names a column twice"),
        ("1,2,3\n4,5,6\n", {"label_column": "kind"}, "has no header row"),
        ("t0,t1,label\n", {}, "holds no series"),
    ],
)
def test_bad_wide_csv_is_one_line(tmp_path: Path, text: str, args: dict, message: str) -> None:
    (tmp_path / "w.csv").write_text(text)
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path / "w.csv", **args)
    _one_line(caught, message)


def test_long_csv_orders_rows_by_time_within_each_id(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    rows = ["id,time,x,y,label", "s1,2,3,30,walk", "s2,0,5,50,run", "s1,0,1,10,walk", "s1,1,2,20,walk",
            "s3,0,7,70,walk", "s2,1,6,60,run"]
    path.write_text("\n".join(rows) + "\n")
    data = read_series_source(path)
    assert data.labels == ["walk", "run", "walk"] and data.channels == 2
    np.testing.assert_array_equal(data.series[0], [[1, 2, 3], [10, 20, 30]])  # time order, not file order
    np.testing.assert_array_equal(data.series[1], [[5, 6], [50, 60]])
    assert "ordered by 'time'" in data.notes["layout"]
    path.write_text("Series_ID,value,target\na,1,p\na,2,p\nb,3,q\n")  # no time column: file order
    data = read_series_source(path)
    assert data.labels == ["p", "q"] and data.series[0].tolist() == [[1, 2]] and "file order" in data.notes["layout"]


def test_a_long_csv_names_a_bad_cell_far_down(tmp_path: Path) -> None:
    rows = [f"s{i // 100},{i % 100},{i},{-i},{'ab'[i // 100 % 2]}" for i in range(40_000)]  # 80,000 values
    rows[35_000] = rows[35_000].replace(",-35000,", ",oops,")
    (tmp_path / "l.csv").write_text("id,time,x,y,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path / "l.csv")
    _one_line(caught, "line 35002, column 'y': 'oops' is not a number")
    rows[35_000] = rows[35_000].replace(",oops,", ",-35000,")
    (tmp_path / "l.csv").write_text("id,time,x,y,label\n" + "\n".join(rows) + "\n")
    data = read_series_source(tmp_path / "l.csv")
    assert len(data) == 400 and data.series[350].tolist()[1][:2] == [-35000, -35001]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,x,label\na,1,p\na,2,q\nb,3,q\n", "line 3: id 'a' has label 'q' here and 'p' on line 2"),
        ("id,time,x,label\na,0,1,p\na,0,2,p\nb,0,3,q\n", "line 3: time 0 appears twice for id 'a'"),
        ("id,x,label\na,1,p\na,,p\nb,3,q\n", "line 3, column 'x': a missing value; fewbit does not guess"),
        ("id,x,y\na,1,2\n", "no label column"),
        ("id,x,label\na,1,p\n,2,q\n", "line 3: the id ('id') is empty"),
        ("id,label\na,p\n", "no value columns"),
    ],
)
def test_bad_long_csv_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError) as caught:
        read_series_source(tmp_path / "l.csv")
    _one_line(caught, message)


# --------------------------------------------------------------------------------------- dispatch


def test_what_is_not_a_collection_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.ts")
    with pytest.raises(DataError, match="not a regular file"):
        read_series_source(tmp_path / "pipe.ts")
    os.symlink("/dev/zero", tmp_path / "zero.txt")
    with pytest.raises(DataError, match="not a regular file"):
        read_series_source(tmp_path / "zero.txt")
    for name, message in (("a.arff", "ARFF is not read"), ("a.npy", "is one sample"), ("a.json", "not .json")):
        (tmp_path / name).write_text("x")
        with pytest.raises(DataError, match=message):
            read_series_source(tmp_path / name)
    with pytest.raises(DataError, match="cannot read"):
        read_series_source(tmp_path / "missing.ts")
    (tmp_path / "latin.txt").write_bytes(b"1,\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_series_source(tmp_path / "latin.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="a label column applies to a CSV table only"):
        read_series_source(tmp_path / "d", label_column="y")
