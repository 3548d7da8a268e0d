"""`csv:` tables: reading, standardisation with training statistics, splits, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fewbit.cli import main
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.sources import load_source
from fewbit.data.synthetic import write_table
from fewbit.errors import DataError
from fewbit.runtime.tables import read_table


def test_info_counts_and_standardisation(tmp_path: Path, capsys) -> None:
    path = write_table(tmp_path / "t.csv", classes=10, rows_per_class=6, features=5)
    assert main(["data", "info", f"csv:{path}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["classes"], info["images"], info["features"], info["channels"]) == (10, 60, 5, None)
    assert info["splits"] == {"train": 6, "val": 2, "test": 2, "all": 10}
    source = load_source(f"csv:{path}")
    train = source.split("train")
    z = train.tensor(np.arange(train.num_images)).numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    assert source.split("test").mean == source.preprocessing.mean  # the test split: training statistics


def test_tasks_are_drawn_over_label_values(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", classes=10, rows_per_class=6, features=4)
    ds = load_source(f"csv:{path}").split("train")
    task = EpisodeSampler(ds, ways=3, shots=2, queries=2).sample(4)
    assert task.support_x.shape == (4, 6, 4) and task.query_x.shape == (4, 6, 4)
    with pytest.raises(DataError, match="has only 6 image"):
        EpisodeSampler(ds, ways=3, shots=4, queries=3)
    with pytest.raises(DataError, match="7-way tasks need 7 classes"):
        EpisodeSampler(ds, ways=7, shots=1, queries=1)


def test_label_column_by_name_and_header_free_tables(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("kind,x,y\nA,1,2\nB,3,4\nC,5,6\n")
    table = read_table(tmp_path / "a.csv", label_column="kind")
    assert table.features == ("x", "y") and table.labels == ("A", "B", "C")
    (tmp_path / "b.csv").write_text("1,2,0\n3,4,1\n")
    table = read_table(tmp_path / "b.csv")
    assert table.features == ("c0", "c1") and table.labels == ("0", "1")
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("x,y,label\n1,2,a\n3,abc,b\n", (), "line 3, column 'y': 'abc', not a number"),
        ("x,y,label\n1,,a\n3,4,b\n", (), "line 2, column 'y': a missing value"),
        ("x,y,label\n1,NA,a\n", (), "a missing value"),
        ("x,y,label\n1,2,a\n", ("--label-column", "kind"), "no column 'kind' for the labels"),
        ("x,y,label\n1,2\n", (), "line 2: 2 cells, the header has 3"),
        ("x,y,label\n1,2,a\n\n3,abc,b\n", (), "line 4, column 'y'"),  # lines count blank ones
        ("x,y,label\n1,2,a\n3,4,b\n", (), "2 label value(s)"),
        ("", (), "holds no rows"),
        ("x,y,label\n\n", (), "holds a header but no rows"),
    ],
)
def test_bad_tables_are_one_line(tmp_path: Path, capsys, text: str, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "t.csv").write_text(text)
    assert main(["data", "info", f"csv:{tmp_path / 't.csv'}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewbit: error:") and message in err and err.count("\n") == 1, err


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"x,label\n\xff\xfe,a\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_table(tmp_path / "t.csv")
    with pytest.raises(DataError, match="is not a file"):
        load_source(f"csv:{tmp_path / 'nothing.csv'}", )


def test_a_header_without_rows_is_one_line(tmp_path: Path) -> None:
    """`fewbit adapt --support t.csv` of a header alone failed with an IndexError."""
    (tmp_path / "t.csv").write_text("x,y,label\n")
    with pytest.raises(DataError, match="holds a header but no rows"):
        read_table(tmp_path / "t.csv", features=("x", "y"), label_column="label")


def test_a_cell_longer_than_the_csv_module_reads_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,y,label\n1,2,a\n3," + "4" * 140_000 + ",b\n")
    assert main(["data", "info", f"csv:{path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewbit: error:") and err.count("\n") == 1, err[:300]
    assert f"{path} line 3: a cell longer than the 131,072 characters fewbit reads" in err
    with pytest.raises(DataError, match="line 3: a cell longer"):  # as `fewbit adapt --support t.csv` reads it
        read_table(path, features=("x", "y"), label_column="label")


@pytest.mark.parametrize("value", ["1e308", "-3.5e38", "1e39"])
def test_values_beyond_float32_are_one_line(tmp_path: Path, capsys, value: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"x,y,label\n1,2,a\n3,4,b\n{value},5,c\n6,7,d\n")
    assert main(["data", "info", f"csv:{path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewbit: error:") and err.count("\n") == 1, err
    assert "line 4, column 'x'" in err and "beyond float32's range" in err
    with pytest.raises(DataError, match="line 4, column 'x'"):
        read_table(path, features=("x", "y"), label_column="label")


def test_a_column_spanning_float32s_range_standardises_to_finite_values(tmp_path: Path) -> None:
    big = float(np.finfo(np.float32).max) * 0.9
    rows = [f"{big if (c + k) % 4 else -big},{c + k},c{c}" for c in range(8) for k in range(4)]
    (tmp_path / "t.csv").write_text("x,y,label\n" + "\n".join(rows) + "\n")
    source = load_source(f"csv:{tmp_path / 't.csv'}")
    all_rows = source.split("all")
    z = all_rows.tensor(np.arange(all_rows.num_images)).numpy()
    assert np.isfinite(z).all() and np.abs(z).max() < 10
    np.testing.assert_array_equal(source.preprocessing.standardize(read_table(tmp_path / "t.csv").values), z)
    # a value of another split too far out for float32 once standardised with the training statistics
    assert "c7" not in source.split("train").classes  # split seed 0 holds c7 out of training
    far = [f"{1e35 if (c, k) == (7, 0) else 0},{c + k},c{c}" for c in range(8) for k in range(4)]
    (tmp_path / "far.csv").write_text("x,y,label\n" + "\n".join(far) + "\n")
    with pytest.raises(DataError, match=r"column 'x' holds values 1e\+41 training standard deviations"):
        load_source(f"csv:{tmp_path / 'far.csv'}")


class _CountedName(str):
    """A column name that counts how often it is compared with another."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        type(self).comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_column_lookups_are_linear_in_the_width(tmp_path: Path) -> None:
    """A 24 x 65,536 table took 67 s in `data info`: each column was looked up by a scan of the header."""
    width = 2_000
    names = [f"f{i}" for i in range(width)]
    (tmp_path / "t.csv").write_text(",".join([*names, "label"]) + "\n" + ",".join(["1"] * width + ["a"]) + "\n")
    _CountedName.comparisons = 0
    table = read_table(tmp_path / "t.csv", label_column=_CountedName("label"),
                       features=[_CountedName(n) for n in reversed(names)])
    comparisons = _CountedName.comparisons
    assert comparisons <= 4 * width, f"{comparisons:,} name comparisons for {width:,} columns"
    assert list(table.features) == names[::-1] and table.values.shape == (1, width)
