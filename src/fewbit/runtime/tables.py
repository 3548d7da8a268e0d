"""CSV tables of numeric features and a label column, read the same way at training time and in the runtime.

The first row is a header unless every cell of it is a number (columns are then named `c0`, `c1`, ...).
Every feature cell must be a number that float32 holds (models and the runtime compute in float32);
an empty or `NA`-like cell is an error that names its line and column (fewbit does not guess missing
values). Numpy and the standard library only.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import io
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from fewbit.errors import DataError
from fewbit.runtime.preprocess import MAX_TABLE_FEATURES, read_input_file

MAX_TABLE_BYTES = 1 << 30
MAX_TABLE_ROWS = 10_000_000
MISSING = ("", "na", "n/a", "nan", "null", "none", "?", "-")
MAX_CSV_CELL = csv.field_size_limit()  # Python's csv module reads no longer cell (131,072 characters)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class Table:
    """Numeric features `values [n, F]` (float64, raw), the label of each row, and the names."""

    values: np.ndarray
    labels: tuple[str, ...]
    features: tuple[str, ...]
    label_column: str


def read_table(
    path: str | os.PathLike[str],
    *,
    label_column: str | None = None,
    features: Sequence[str] | None = None,
    labelled: bool = True,
) -> Table:
    """The table in the CSV file at `path`.

    `label_column` names the label column (None: the last one). `features` fixes the feature
    columns and their order (an artifact's); None takes every other column. With `labelled=False`
    the label column may be absent (query rows to classify).
    """
    path = Path(path)
    lines = array.array("q")  # the line each row starts on
    rows: list[list[str]] = []
    for line, row in csv_rows(path, MAX_TABLE_BYTES, "save the table as a UTF-8 CSV"):
        if row and any(c.strip() for c in row):
            lines.append(line)
            rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no rows")
    if len(rows) > MAX_TABLE_ROWS + 1:
        raise DataError(f"{path} has {len(rows):,} rows, more than the {MAX_TABLE_ROWS:,} fewbit reads")
    width = len(rows[0])
    if width > MAX_TABLE_FEATURES + 1:
        raise DataError(f"{path} has {width:,} columns, more than {MAX_TABLE_FEATURES:,} features allow")
    if all(_number(c) is not None for c in rows[0]):
        header = [f"c{i}" for i in range(width)]
    else:
        header = [c.strip() for c in rows[0]]
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise DataError(f"{path} holds a header but no rows")
    column = {name: i for i, name in enumerate(header)}  # one lookup per column: tables may be 65,536 wide
    if len(column) != len(header):
        twice = sorted(name for name, n in Counter(header).items() if n > 1)
        raise DataError(f"{path}: the header names a column twice ({', '.join(twice[:5])}"
                        f"{' ...' if len(twice) > 5 else ''})")
    label = header[-1] if label_column is None else label_column
    has_label = label in column
    if not has_label and (labelled or features is None):
        raise DataError(f"{path}: no column {label!r} for the labels; columns are {', '.join(header[:12])}"
                        f"{' ...' if len(header) > 12 else ''} (choose one with --label-column)")
    wanted = [h for h in header if h != label] if features is None else list(features)
    missing = [f for f in wanted if f not in column]
    if missing:
        raise DataError(f"{path}: the model needs column(s) {', '.join(missing[:5])} that the table lacks")
    if not wanted:
        raise DataError(f"{path}: no feature columns beside the label column {label!r}")
    index = [column[f] for f in wanted]
    label_index = column[label] if has_label else None
    values = np.empty((len(rows), len(wanted)), np.float64)
    labels = []
    for r, row in enumerate(rows):
        line = lines[r]
        if len(row) != width:
            raise DataError(f"{path} line {line}: {len(row)} cells, the header has {width}")
        for j, col in enumerate(index):
            cell = row[col].strip()
            value = _number(cell)
            if value is None:
                what = "a missing value" if cell.lower() in MISSING else f"{cell[:20]!r}, not a number"
                raise DataError(f"{path} line {line}, column {wanted[j]!r}: {what}; fewbit needs every "
                                f"feature cell to be a number (fill or drop such rows first)")
            values[r, j] = value
        if label_index is not None:
            lab = row[label_index].strip()
            if not lab:
                raise DataError(f"{path} line {line}: the label ({label!r}) is empty")
            labels.append(lab)
    with np.errstate(over="ignore"):
        overflow = ~np.isfinite(values.astype(np.float32))  # what training and the runtime compute with
    if overflow.any():
        r, j = (int(i) for i in np.argwhere(overflow)[0])
        raise DataError(f"{path} line {lines[r]}, column {wanted[j]!r}: {values[r, j]:g} is beyond float32's "
                        f"range (magnitude at most {FLOAT32_MAX:.4g}), which fewbit computes in; rescale the column")
    return Table(values, tuple(labels), tuple(wanted), label)


def csv_rows(path: Path, max_bytes: int, hint: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each record of the UTF-8 CSV file at `path` (at most `max_bytes`), in order.

    A blank line is a record of no cells. Text that is not UTF-8, a cell longer than MAX_CSV_CELL
    characters, or anything else the csv module refuses is a DataError naming the file (and line);
    `hint` ends the message for text that is not UTF-8 (what to do).
    """
    data = read_input_file(path, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # offsets count from after a byte-order mark
        offset = exc.start + len(data) - len(exc.object)
        raise DataError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {offset}); "
                        f"{hint}") from None
    del data
    reader = csv.reader(io.StringIO(text))
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            what = (f"a cell longer than the {MAX_CSV_CELL:,} characters fewbit reads" if "field limit" in str(exc)
                    else f"not readable as CSV ({exc})")
            raise DataError(f"{path} line {start}: {what}") from None
        yield start, row
        start = reader.line_num + 1


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
