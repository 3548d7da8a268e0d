"""CSV tables of numeric features and a label column, read the same way at training time and in the runtime.

The first row is a header unless every cell of it is a number (columns are then named `c0`, `c1`, ...).
Every feature cell must be a number; an empty or `NA`-like cell is an error that names its row and
column (fewbit does not guess missing values). Numpy and the standard library only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewbit.errors import DataError
from fewbit.runtime.preprocess import MAX_TABLE_FEATURES, read_regular_file

MAX_TABLE_BYTES = 1 << 30
MAX_TABLE_ROWS = 10_000_000
MISSING = ("", "na", "n/a", "nan", "null", "none", "?", "-")


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
    data = read_regular_file(path, MAX_TABLE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the table as a UTF-8 CSV") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} holds no rows")
    if len(rows) > MAX_TABLE_ROWS + 1:
        raise DataError(f"{path} has {len(rows):,} rows, more than the {MAX_TABLE_ROWS:,} fewbit reads")
    width = len(rows[0])
    if width > MAX_TABLE_FEATURES + 1:
        raise DataError(f"{path} has {width:,} columns, more than {MAX_TABLE_FEATURES:,} features allow")
    if all(_number(c) is not None for c in rows[0]):
        header = [f"c{i}" for i in range(width)]
        first_line = 1
    else:
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
        first_line = 2
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header names a column twice ({', '.join(header)})")
    label = header[-1] if label_column is None else label_column
    has_label = label in header
    if not has_label and (labelled or features is None):
        raise DataError(f"{path}: no column {label!r} for the labels; columns are {', '.join(header[:12])}"
                        f"{' ...' if len(header) > 12 else ''} (choose one with --label-column)")
    wanted = [h for h in header if h != label] if features is None else list(features)
    missing = [f for f in wanted if f not in header]
    if missing:
        raise DataError(f"{path}: the model needs column(s) {', '.join(missing[:5])} that the table lacks")
    if not wanted:
        raise DataError(f"{path}: no feature columns beside the label column {label!r}")
    index = [header.index(f) for f in wanted]
    label_index = header.index(label) if has_label else None
    values = np.empty((len(rows), len(wanted)), np.float64)
    labels = []
    for r, row in enumerate(rows):
        line = r + first_line
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
    return Table(values, tuple(labels), tuple(wanted), label)


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
