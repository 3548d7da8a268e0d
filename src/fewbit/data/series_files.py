"""Collections of labelled time series read from files: the foundation of the `series:PATH` data spec.

`read_series_source(path)` decides by what `path` is:

    FILE.ts                 sktime/aeon's format (univariate or multivariate, equal or unequal length)
    FILE.txt, FILE.tsv      UCR text: one series a line, label first; tab, comma or whitespace separated
    FILE (no suffix)        UCR text (the 2015 archive names files `GunPoint_TRAIN`)
    FILE.csv                a table when its first row is a header (see below), else UCR text
    FOLDER                  an archive folder when its top level holds `<Name>_TRAIN.<ext>` or
                            `<Name>_TEST.<ext>` (ext: ts, tsv, txt, csv or none), else class folders

Archive folder: the TRAIN and TEST files of ONE problem are read as one pool of classes (few-shot
splits are by class, not by the archive's files); each series records its file in `origins` and
`notes["files"]` counts them. When a part exists in several formats the first of ts, tsv, txt,
csv, none is read (the others are listed in `notes["ignored_files"]`). Two problem names at the top
level are refused: give one file, or a folder of one problem.

Class folders, found exactly as `fewbit.data.folder` finds images (its listing is reused: hidden
files, `._x` forks and `__MACOSX` skipped; links followed once; FIFOs and devices skipped), with
one `.csv` or `.npy` sample file per series (`fewbit.runtime.series.read_series_file`):

    PATH/<class>/<sample>                   flat
    PATH/<group>/<class>/<sample>           grouped: `groups` holds the group, the label is `<group>/<class>`
    PATH/train|val|test/<...as above...>    explicit parts: `parts` holds the part, the label is
                                            prefixed `<part>/`, so a class name in two parts is two classes

A sample file that cannot be read is skipped with one warning naming it and why (as unreadable
images are); other files are skipped with a warning that names them.

CSV tables. The first row is a header when a cell other than its first is neither a number nor
empty, or its first cell names a label or id column (below) or `label_column`, or its first cell
is not a number and the others are the time steps 0, 1, 2, ... or 1, 2, 3, ... With a header:

    long   a column named id, series_id or sample_id (case-insensitive) is present: one row per time
           step; the label column (`label_column`, else the first named label, labels, class,
           classes, target, category, class_label or classlabel) must hold one label per id; an
           optional time column (time, timestamp, t, step, time_step) orders an id's rows when
           every time cell is a number (file order otherwise, and repeated times are refused);
           every other column is a channel. Missing values are refused.
    wide   otherwise: one series a row, the label column (`label_column`, else the first named as
           above, else the first column when the others are named as time steps, else the last
           column), every other column a time step in order (one channel).

Missing values: in `.ts` (`?`), UCR text (`NaN`) and wide tables (an empty cell, `?`, NaN, NA),
time steps missing in every channel at the END of a series are padding and trimmed (unequal-length
sets are stored that way); any other missing value is refused, naming its line and column
(fewbit does not guess missing values). Labels that are integral numbers written as floats
(`1.0000000e+00`) become integers (`1`).

Bounds, checked as the data are read and before a large array is allocated: a file of at most
`MAX_SOURCE_BYTES`, `MAX_SERIES_COUNT` series, `MAX_SERIES_LENGTH` time steps and
`MAX_SERIES_CHANNELS` channels a series (a line's separators are counted before it is split),
`MAX_TOTAL_VALUES` values in all. Every error is a `DataError` of one line naming the file, and the
line and column where there is one. A class with one series is kept (it can still serve in tasks
whose support and query come from different classes, and the sampler names classes too small for a
task shape); fewer than 2 classes is an error.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import math
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.data.folder import SPLIT_NAMES, _tree, list_files
from fewbit.errors import DataError
from fewbit.runtime.preprocess import read_input_file
from fewbit.runtime.series import (
    MAX_SERIES_CHANNELS,
    MAX_SERIES_LENGTH,
    SERIES_FILE_SUFFIXES,
    read_series_file,
)

MAX_SOURCE_BYTES = 1 << 30  # one .ts, UCR text or CSV file
MAX_SERIES_COUNT = 1_000_000
MAX_TOTAL_VALUES = 200_000_000  # float32: 800 MB
LABEL_NAMES = ("label", "labels", "class", "classes", "target", "category", "class_label", "classlabel")
ID_NAMES = ("id", "series_id", "sample_id")
TIME_NAMES = ("time", "timestamp", "t", "step", "time_step")
MISSING_TOKENS = frozenset({"", "?", "nan", "na", "n/a", "null", "none"})
ARCHIVE_FORMATS = (".ts", ".tsv", ".txt", ".csv", "")  # preference order when a part has several
TEXT_SUFFIXES = (".txt", ".tsv", "")
_ARCHIVE_NAME = re.compile(r"^(?P<name>.+)_(?P<part>TRAIN|TEST)(?P<ext>\.(?:ts|tsv|txt|csv))?$")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_TOKEN = re.compile(r"\S+")


@dataclasses.dataclass
class SeriesCollection:
    """Labelled series: `series[i]` is float32 `[C, T_i]` (one C for all), `labels[i]` its class.

    `groups[i]` is its group where the layout gives groups (`<group>/<class>/` folders), `parts[i]`
    its part (train, val or test) where the layout gives `train/ val/ test/` folders, `origins[i]`
    the file it came from (relative to a folder); `notes` says how it was read (for `data info`).
    """

    series: list[np.ndarray]
    labels: list[str]
    groups: list[str] | None = None
    parts: list[str] | None = None
    origins: list[str] | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.series)
        for field in ("labels", "groups", "parts", "origins"):
            value = getattr(self, field)
            if value is not None and len(value) != n:
                raise ValueError(f"SeriesCollection.{field}: {len(value)} entries for {n} series")

    def __len__(self) -> int:
        return len(self.series)

    @property
    def channels(self) -> int:
        """Channels of every series (0 when there is none)."""
        return int(self.series[0].shape[0]) if self.series else 0

    @property
    def length_min(self) -> int:
        return min((int(s.shape[1]) for s in self.series), default=0)

    @property
    def length_max(self) -> int:
        return max((int(s.shape[1]) for s in self.series), default=0)

    @property
    def classes(self) -> tuple[str, ...]:
        """The distinct labels, sorted."""
        return tuple(sorted(set(self.labels)))

    def class_sizes(self) -> dict[str, int]:
        """Series per class, in sorted class order."""
        sizes: dict[str, int] = {}
        for label in self.labels:
            sizes[label] = sizes.get(label, 0) + 1
        return dict(sorted(sizes.items()))


# ------------------------------------------------------------------------------------------ dispatch


def read_series_source(path: str | os.PathLike[str], *, label_column: str | None = None) -> SeriesCollection:
    """The labelled series at `path`: a file or a folder, read by the layout it has (module docstring).

        data = read_series_source(Path("GunPoint"))             # GunPoint_TRAIN.ts + GunPoint_TEST.ts
        x = SeriesPreprocessing(channels=data.channels, length=128).prepare(data.series)
    """
    path = Path(path).expanduser()
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); give a series file or folder") from None
    if stat.S_ISDIR(info.st_mode):
        if label_column is not None:
            raise DataError(f"{path} is a folder: a label column applies to a CSV table only")
        data = _read_archive_folder(path) if _archive_files(path) else read_class_folders(path)
    else:
        data = read_collection_file(path, label_column=label_column)
    return _finish(data, path)


def read_collection_file(path: Path, *, label_column: str | None = None) -> SeriesCollection:
    """The labelled series of one file, read by its suffix (`.ts`, `.txt`/`.tsv`/none, `.csv`); unchecked."""
    suffix = path.suffix.lower()
    if suffix == ".ts":
        return read_ts_file(path)
    if suffix == ".csv":
        return read_csv_series(path, label_column=label_column)
    if suffix in TEXT_SUFFIXES or _ARCHIVE_NAME.match(path.name):
        if label_column is not None:
            raise DataError(f"{path}: UCR text has its label in the first column; a label column applies to "
                            f"a CSV table with a header")
        return read_ucr_text(path)
    if suffix == ".arff":
        raise DataError(f"{path}: ARFF is not read; use the problem's .ts file (the archives ship both)")
    if suffix in SERIES_FILE_SUFFIXES:
        raise DataError(f"{path} is one sample; put samples in class folders (<class>/<sample>{suffix})")
    raise DataError(f"{path}: a series collection is a .ts, .tsv, .txt or .csv file or a folder, "
                    f"not {suffix} (see fewbit.data.series_files)")


def _finish(data: SeriesCollection, where: Path) -> SeriesCollection:
    """Refuse fewer than 2 classes; add counts to the notes."""
    sizes = data.class_sizes()
    if len(sizes) < 2:
        raise DataError(f"{where}: {len(sizes)} class(es); few-shot tasks need at least 2 "
                        f"(is the label column or layout right?)")
    data.notes.update({
        "series": len(data), "classes": len(sizes), "channels": data.channels,
        "length_min": data.length_min, "length_max": data.length_max,
        "classes_with_one_series": sum(1 for v in sizes.values() if v == 1),
    })
    return data


# --------------------------------------------------------------------------------------- .ts files


def read_ts_file(path: Path) -> SeriesCollection:
    """The series of a `.ts` file (sktime/aeon format; `@timeStamps true` and regression targets refused)."""
    text = _text(path)
    header: dict[str, str] = {}
    declared: list[str] | None = None
    reader = _Reader(path)
    dims: int | None = None
    in_data = False
    for line_no, raw in _lines(text):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(f"{path} line {line_no}: expected a @keyword or @data before the series")
            key, _, value = line[1:].partition(" ")
            key, value = key.lower(), value.strip()
            if key == "data":
                in_data = True
                declared = _ts_labels(path, header)
                dims = _ts_dimensions(path, header)
                continue
            header[key] = value
            if key == "timestamps" and value.lower() == "true":
                raise DataError(f"{path}: @timeStamps true ((time,value) pairs) is not read; write the values only")
            continue
        if "(" in line:
            raise DataError(f"{path} line {line_no}: (time,value) pairs are not read; write the values only")
        if line.count(":") > MAX_SERIES_CHANNELS:
            raise DataError(f"{path} line {line_no}: more than {MAX_SERIES_CHANNELS} dimensions (channels)")
        fields = line.split(":")
        if len(fields) < 2:
            raise DataError(f"{path} line {line_no}: no ':label' at the end of the line")
        label = _label(fields[-1])
        if not label:
            raise DataError(f"{path} line {line_no}: the label after the last ':' is empty")
        if declared is not None and label not in declared and fields[-1].strip() not in declared:
            raise DataError(f"{path} line {line_no}: label {label!r} is not among @classLabel "
                            f"{' '.join(declared[:10])}")
        values = fields[:-1]
        if dims is not None and len(values) != dims:
            raise DataError(f"{path} line {line_no}: {len(values)} dimension(s), the header says {dims}")
        rows = []
        for d, dim in enumerate(values):
            if dim.count(",") >= MAX_SERIES_LENGTH:
                raise DataError(f"{path} line {line_no}, dimension {d + 1}: more than {MAX_SERIES_LENGTH:,} "
                                f"values, more than fewbit reads")
            rows.append(_numbers(dim.split(","), lambda j, d=d, n=line_no: f"line {n}, dimension {d + 1}, "
                                 f"value {j + 1}", path))
        reader.add(_stack(rows, path, line_no), label, f"line {line_no}",
                   lambda c, t, line_no=line_no: f"line {line_no}, dimension {c + 1}, value {t + 1}")
    if not in_data:
        raise DataError(f"{path} has no @data line; is it a .ts file?")
    notes = {"layout": f".ts file ({header.get('problemname', path.stem)})", "format": "ts"}
    return reader.collection(notes)


def _ts_labels(path: Path, header: dict[str, str]) -> list[str] | None:
    if "targetlabel" in header and header["targetlabel"].split()[:1] == ["true"]:
        raise DataError(f"{path} holds regression targets (@targetLabel true); fewbit needs class labels")
    value = header.get("classlabel")
    if value is None:
        raise DataError(f"{path} has no @classLabel line; fewbit needs class labels")
    words = value.split()
    if not words or words[0].lower() != "true":
        raise DataError(f"{path} holds no class labels (@classLabel {value}); fewbit needs class labels")
    return words[1:] or None


def _ts_dimensions(path: Path, header: dict[str, str]) -> int | None:
    if header.get("univariate", "").lower() == "true":
        return 1
    value = header.get("dimensions")
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_SERIES_CHANNELS:
        raise DataError(f"{path}: @dimensions {value[:20]} must be a whole number 1..{MAX_SERIES_CHANNELS}")
    return int(value)


# ------------------------------------------------------------------------------------------ UCR text


def read_ucr_text(path: Path) -> SeriesCollection:
    """The series of a UCR text file: one a line, label first, separated by tabs, commas or whitespace
    (the first of tab and comma the first line holds; neither: whitespace)."""
    text = _text(path)
    reader = _Reader(path)
    separator: str | None = None
    first = True
    for line_no, raw in _lines(text):
        line = raw.strip()
        if not line:
            continue
        if first:
            separator = "\t" if "\t" in line else ("," if "," in line else None)
            first = False
        count = line.count(separator) if separator else sum(1 for _ in _TOKEN.finditer(line)) - 1
        if count > MAX_SERIES_LENGTH:
            raise DataError(f"{path} line {line_no}: more than {MAX_SERIES_LENGTH:,} values, more than fewbit reads")
        cells = line.split(separator)
        if len(cells) < 2:
            raise DataError(f"{path} line {line_no}: a label and no values (UCR text is label, value, value, ...)")
        label = _label(cells[0])
        if not label:
            raise DataError(f"{path} line {line_no}: the label (first column) is empty")
        values = _numbers(cells[1:], lambda j, n=line_no: f"line {n}, column {j + 2}", path)
        reader.add(values[None], label, f"line {line_no}", lambda c, t, n=line_no: f"line {n}, column {t + 2}")
    kind = {"\t": "tab", ",": "comma", None: "whitespace"}[separator]
    notes = {"layout": f"UCR text ({kind} separated)", "format": "ucr"}
    return reader.collection(notes)


# ---------------------------------------------------------------------------------------- CSV tables


def read_csv_series(path: Path, *, label_column: str | None = None) -> SeriesCollection:
    """A `.csv` file: a long or wide table when its first row is a header, else UCR text (module docstring)."""
    text = _text(path)
    lines = _lines(text)
    first = next(((n, line) for n, line in lines if line.strip()), None)
    if first is None:
        raise DataError(f"{path} holds no rows")
    delimiter = next((d for d in ("\t", ";", ",") if d in first[1]), ",")
    head = [c.strip() for c in next(csv.reader([first[1]], delimiter=delimiter))]
    names = [h.lower() for h in head]
    steps = [c for c in head[1:] if c.isdigit()]
    step_names = (_number(head[0]) is None and len(steps) == len(head) - 1 > 1  # <label>,0,1,2,... or 1,2,3,...
                  and [int(c) for c in steps] in (list(range(len(steps))), list(range(1, len(steps) + 1))))
    is_header = (
        any(_number(c) is None and c.lower() not in MISSING_TOKENS for c in head[1:])
        or names[0] in LABEL_NAMES + ID_NAMES
        or (label_column is not None and label_column in head)
        or step_names
    )
    if not is_header:
        if label_column is not None:
            raise DataError(f"{path} has no header row, so no column {label_column!r}; UCR text has its "
                            f"label in the first column")
        return read_ucr_text(path)
    if len(set(head)) != len(head):
        raise DataError(f"{path}: the header names a column twice")
    if any(n in ID_NAMES for n in names):
        return _read_long(path, text, delimiter, head, label_column)
    if label_column is None and step_names and names[0] not in LABEL_NAMES:
        label_column = head[0]  # the one column not named as a time step
    return _read_wide(path, text, delimiter, head, label_column)


def _label_index(path: Path, head: list[str], label_column: str | None, *, default_last: bool) -> int:
    if label_column is not None:
        if label_column not in head:
            raise DataError(f"{path}: no column {label_column!r} for the labels; columns are "
                            f"{', '.join(head[:12])}{' ...' if len(head) > 12 else ''}")
        return head.index(label_column)
    names = [h.lower() for h in head]
    found = next((i for i, n in enumerate(names) if n in LABEL_NAMES), None)
    if found is None and not default_last:
        raise DataError(f"{path}: no label column (named {', '.join(LABEL_NAMES[:5])}, ...); name it label or "
                        f"give label_column")
    return len(head) - 1 if found is None else found


def _rows(path: Path, text: str, delimiter: str, width: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each data row after the header; separators counted before a line is split."""
    numbered = ((n, line) for n, line in _lines(text) if line.strip())
    next(numbered)  # the header

    def checked() -> Iterator[str]:
        for n, line in numbered:
            if line.count(delimiter) > MAX_SERIES_LENGTH + 2:
                raise DataError(f"{path} line {n}: more than {MAX_SERIES_LENGTH:,} columns, more than fewbit reads")
            current[0] = n
            yield line

    current = [0]
    rows = csv.reader(checked(), delimiter=delimiter)
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path} line {current[0]}: not a CSV row ({' '.join(str(exc).split())})") from None
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            raise DataError(f"{path} line {current[0]}: {len(cells)} cells, the header has {width}")
        yield current[0], [c.strip() for c in cells]


def _read_wide(path: Path, text: str, delimiter: str, head: list[str], label_column: str | None) -> SeriesCollection:
    if len(head) - 1 > MAX_SERIES_LENGTH:
        raise DataError(f"{path}: {len(head) - 1:,} time-step columns, more than the {MAX_SERIES_LENGTH:,} "
                        f"fewbit reads")
    label_at = _label_index(path, head, label_column, default_last=True)
    value_columns = [i for i in range(len(head)) if i != label_at]
    if not value_columns:
        raise DataError(f"{path}: no time-step columns beside the label column {head[label_at]!r}")
    reader = _Reader(path)
    for n, cells in _rows(path, text, delimiter, len(head)):
        label = _label(cells[label_at])
        if not label:
            raise DataError(f"{path} line {n}: the label ({head[label_at]!r}) is empty")
        values = _numbers([cells[i] for i in value_columns], lambda j, n=n: f"line {n}, column "
                          f"{head[value_columns[j]]!r}", path)
        reader.add(values[None], label, f"line {n}",
                   lambda c, t, n=n: f"line {n}, column {head[value_columns[t]]!r}")
    notes = {"layout": f"wide CSV table (one series a row, label column {head[label_at]!r})", "format": "wide-csv"}
    return reader.collection(notes)


def _read_long(path: Path, text: str, delimiter: str, head: list[str], label_column: str | None) -> SeriesCollection:
    names = [h.lower() for h in head]
    id_at = next(i for i, n in enumerate(names) if n in ID_NAMES)
    label_at = _label_index(path, head, label_column, default_last=False)
    if label_at == id_at:
        raise DataError(f"{path}: the id column {head[id_at]!r} cannot also be the label column")
    time_at = next((i for i, n in enumerate(names) if n in TIME_NAMES and i not in (id_at, label_at)), None)
    channel_columns = [i for i in range(len(head)) if i not in (id_at, label_at, time_at)]
    if not channel_columns:
        raise DataError(f"{path}: no value columns beside id, label and time")
    if len(channel_columns) > MAX_SERIES_CHANNELS:
        raise DataError(f"{path}: {len(channel_columns)} value columns (channels), more than the "
                        f"{MAX_SERIES_CHANNELS} fewbit reads")
    width = len(channel_columns)
    ids: dict[str, int] = {}
    id_labels: list[str] = []
    id_lines: list[int] = []
    # Per row, compact: which id, which line, its time (NaN: not a number); values converted in chunks.
    row_ids, row_lines, times = array.array("q"), array.array("q"), array.array("d")
    chunks: list[np.ndarray] = []
    pending: list[str] = []
    pending_from = 0  # the row index of pending's first row

    def flush() -> None:
        nonlocal pending, pending_from
        if pending:
            first = pending_from
            chunks.append(_numbers(pending, lambda j: f"line {row_lines[first + j // width]}, column "
                                   f"{head[channel_columns[j % width]]!r}", path).reshape(-1, width))
            pending_from += len(pending) // width
            pending = []

    for n, cells in _rows(path, text, delimiter, len(head)):
        key = cells[id_at]
        if not key:
            raise DataError(f"{path} line {n}: the id ({head[id_at]!r}) is empty")
        label = _label(cells[label_at])
        if not label:
            raise DataError(f"{path} line {n}: the label ({head[label_at]!r}) is empty")
        k = ids.get(key)
        if k is None:
            if len(ids) >= MAX_SERIES_COUNT:
                raise DataError(f"{path}: more than {MAX_SERIES_COUNT:,} series (ids), more than fewbit reads")
            k = ids[key] = len(ids)
            id_labels.append(label)
            id_lines.append(n)
        elif id_labels[k] != label:
            raise DataError(f"{path} line {n}: id {key[:40]!r} has label {label!r} here and {id_labels[k]!r} on "
                            f"line {id_lines[k]}; a series has one label")
        if (len(row_ids) + 1) * width > MAX_TOTAL_VALUES:
            raise DataError(f"{path}: more than {MAX_TOTAL_VALUES:,} values, more than fewbit reads")
        row_ids.append(k)
        row_lines.append(n)
        if time_at is not None:
            value = _number(cells[time_at])
            times.append(value if value is not None and math.isfinite(value) else math.nan)
        pending.extend(cells[i] for i in channel_columns)
        if len(pending) >= 1 << 16:
            flush()
    flush()
    if not row_ids:
        raise DataError(f"{path} holds a header but no rows")
    values = np.concatenate(chunks)  # [rows, C] float64
    missing = np.isnan(values)
    if missing.any():
        r, c = (int(v[0]) for v in np.nonzero(missing))
        raise DataError(f"{path} line {row_lines[r]}, column {head[channel_columns[c]]!r}: a missing value; "
                        f"fewbit does not guess missing values (fill or drop them first)")
    row_of = np.frombuffer(row_ids, np.int64)
    time_values = np.frombuffer(times, np.float64) if time_at is not None else None
    if time_values is not None and np.isnan(time_values).any():
        time_values = None  # a time cell that is not a number: rows stay in file order
    if time_values is not None:
        order = np.lexsort((time_values, row_of))
        same = (row_of[order][1:] == row_of[order][:-1]) & (time_values[order][1:] == time_values[order][:-1])
        if same.any():
            r = int(order[int(np.argmax(same)) + 1])
            raise DataError(f"{path} line {row_lines[r]}: time {time_values[r]:g} appears twice for id "
                            f"{list(ids)[row_of[r]][:40]!r}")
    else:
        order = np.argsort(row_of, kind="stable")
    counts = np.bincount(row_of, minlength=len(ids))
    ends = np.cumsum(counts)
    ordered = values[order]
    reader = _Reader(path)
    names_of = list(ids)
    for k in range(len(ids)):
        block = ordered[ends[k] - counts[k] : ends[k]].T  # [C, T]
        reader.add(block, id_labels[k], f"line {id_lines[k]}",
                   lambda c, t, k=k: f"id {names_of[k][:40]!r}, column {head[channel_columns[c]]!r}")
    time_rule = ("no time column: file order" if time_at is None else
                 f"ordered by {head[time_at]!r}" if time_values is not None else
                 f"file order ({head[time_at]!r} holds cells that are not numbers)")
    notes = {"layout": f"long CSV table (id {head[id_at]!r}, label {head[label_at]!r}, {width} channel(s), "
                       f"{time_rule})", "format": "long-csv"}
    return reader.collection(notes)


# ------------------------------------------------------------------------------------ archive folder


def _archive_files(root: Path) -> dict[tuple[str, str], list[str]]:
    """`{(problem, part): [file names]}` of the regular files at `root`'s top level named `<Name>_TRAIN.<ext>`
    or `<Name>_TEST.<ext>`, each list in `ARCHIVE_FORMATS` order."""
    found: dict[tuple[str, str], list[str]] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {root} ({exc.strerror or exc})") from None
    for entry in entries:
        match = _ARCHIVE_NAME.match(entry.name)
        if entry.name.startswith(".") or match is None:
            continue
        try:
            if not stat.S_ISREG(os.stat(entry.path).st_mode):
                continue
        except OSError:
            continue
        found.setdefault((match["name"], match["part"]), []).append(entry.name)
    for names in found.values():
        names.sort(key=lambda n: ARCHIVE_FORMATS.index(Path(n).suffix.lower()
                                                       if Path(n).suffix.lower() in ARCHIVE_FORMATS else ""))
    return found


def _read_archive_folder(root: Path) -> SeriesCollection:
    found = _archive_files(root)
    problems = sorted({name for name, _ in found})
    if len(problems) > 1:
        raise DataError(f"{root} holds several problems ({', '.join(problems[:5])}); give one file, or a folder "
                        f"of one problem")
    series: list[np.ndarray] = []
    labels: list[str] = []
    origins: list[str] = []
    files: dict[str, int] = {}
    ignored: list[str] = []
    for part in ("TRAIN", "TEST"):
        names = found.get((problems[0], part))
        if not names:
            continue
        ignored += names[1:]
        data = read_collection_file(root / names[0])
        if series and data.series and data.channels != series[0].shape[0]:
            raise DataError(f"{root}: {names[0]} has {data.channels} channel(s), the other part "
                            f"{series[0].shape[0]}; both parts need the same channels")
        if len(series) + len(data) > MAX_SERIES_COUNT:
            raise DataError(f"{root}: more than {MAX_SERIES_COUNT:,} series, more than fewbit reads")
        series += data.series
        labels += data.labels
        origins += [names[0]] * len(data)
        files[names[0]] = len(data)
    if sum(int(s.size) for s in series) > MAX_TOTAL_VALUES:
        raise DataError(f"{root}: more than {MAX_TOTAL_VALUES:,} values, more than fewbit reads")
    notes = {"layout": f"archive folder ({problems[0]}: {' + '.join(files)} pooled; few-shot splits are by class)",
             "format": "archive", "problem": problems[0], "files": files, "ignored_files": ignored}
    return SeriesCollection(series, labels, origins=origins, notes=notes)


# ------------------------------------------------------------------------------------- class folders


def read_class_folders(root: Path) -> SeriesCollection:
    """Class folders of `.csv`/`.npy` sample files, flat, grouped or in train/val/test (module docstring)."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    listing = list_files(root)
    samples = [f for f in listing.ignored if f.lower().endswith(SERIES_FILE_SUFFIXES)]
    skipped = [f for f in listing.ignored if not f.lower().endswith(SERIES_FILE_SUFFIXES)] + listing.files
    if not samples:
        hint = ""
        if any(_ARCHIVE_NAME.match(f.rsplit("/", 1)[-1]) for f in skipped):
            hint = " (it holds archive files in subfolders: give one problem's folder or file)"
        raise DataError(f"{root} has no .csv or .npy series files in class folders{hint}; put each class's "
                        f"samples in a folder of its own (<class>/<sample>.csv)")
    top = {f.split("/", 1)[0] for f in samples if "/" in f}
    explicit = [s for s in SPLIT_NAMES if s in top]
    trees: dict[str, Any] = {}
    if explicit:
        for needed in ("train", "test"):
            if needed not in explicit:
                raise DataError(f"{root} has {'/'.join(explicit)}/ folders but no {needed}/; give train/ and test/ "
                                f"(val/ is optional) or no part folders at all")
        skipped += [f for f in samples if f.split("/", 1)[0] not in SPLIT_NAMES]
        for part in explicit:
            trees[part] = _class_tree([f for f in samples if f.startswith(part + "/")], part + "/", f"{root}/{part}")
        layout = f"class folders in parts ({', '.join(explicit)}), {'grouped' if trees['train'].grouped else 'flat'}"
    else:
        trees["all"] = _class_tree(samples, "", str(root))
        layout = ("class folders, grouped (<group>/<class>/<sample>)" if trees["all"].grouped
                  else "class folders, flat (<class>/<sample>)")
    skipped += [f for t in trees.values() for f in t.loose]
    series: list[np.ndarray] = []
    labels: list[str] = []
    groups: list[str] = []
    parts: list[str] = []
    origins: list[str] = []
    unreadable: list[str] = []
    total = 0
    for part, tree in trees.items():
        for cls in sorted(tree.classes):
            group, members = tree.classes[cls]
            for rel in sorted(members):
                try:
                    values = read_series_file(root / rel)
                except DataError as exc:
                    unreadable.append(str(exc))
                    continue
                if series and values.shape[0] != series[0].shape[0]:
                    raise DataError(f"{root / rel} has {values.shape[0]} channel(s), {root / origins[0]} has "
                                    f"{series[0].shape[0]}; every sample needs the same channels")
                total += values.size
                if len(series) >= MAX_SERIES_COUNT or total > MAX_TOTAL_VALUES:
                    raise DataError(f"{root}: more than {MAX_SERIES_COUNT:,} series or {MAX_TOTAL_VALUES:,} values, "
                                    f"more than fewbit reads")
                series.append(values)
                labels.append(cls if part == "all" else f"{part}/{cls}")
                groups.append(group if part == "all" else f"{part}/{group}")
                parts.append(part)
                origins.append(rel)
    _warn(root, "file(s) that are not series samples in class folders", skipped)
    _warn(root, "unreadable series file(s)", unreadable)
    if not series:
        raise DataError(f"{root}: no series file could be read ({unreadable[0]})")
    grouped = next(iter(trees.values())).grouped
    notes = {"layout": layout, "format": "class-folders", "ignored_files": len(skipped),
             "unreadable_files": len(unreadable)}
    return SeriesCollection(series, labels, groups=groups if grouped else None,
                            parts=parts if explicit else None, origins=origins, notes=notes)


def _class_tree(files: Sequence[str], prefix: str, where: str) -> Any:
    """`fewbit.data.folder`'s class tree of `files`, refusing its bad layouts in words about series."""
    depths = {f[len(prefix) :].count("/") for f in files} & {1, 2}
    if not depths:
        raise DataError(f"{where} has no class folders with series files; put each class's samples in a folder "
                        f"of its own (<class>/<sample>.csv, or <group>/<class>/<sample>.csv)")
    if len(depths) == 2:
        flat = next(f for f in files if f[len(prefix) :].count("/") == 1)
        grouped = next(f for f in files if f[len(prefix) :].count("/") == 2)
        raise DataError(f"{where} mixes <class>/<sample> ({flat}) and <group>/<class>/<sample> ({grouped}); "
                        f"use one layout")
    return _tree(files, prefix, where)


def _warn(root: Path, what: str, names: Sequence[str]) -> None:
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(f"{root}: skipped {len(names)} {what}: {shown}", stacklevel=4)


# ------------------------------------------------------------------------------------------- helpers


class _Reader:
    """Collects the series of one file, checking channels, lengths, values and the bounds as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.series: list[np.ndarray] = []
        self.labels: list[str] = []
        self.first_where = ""
        self.total = 0

    def add(self, values: np.ndarray, label: str, where: str, cell: Callable[[int, int], str]) -> None:
        """Add float64 `[C, T]` `values` (NaN = missing) with `label`; `cell(c, t)` names a value in errors."""
        path = self.path
        trimmed = _trim(values, path, where, cell)
        if trimmed.shape[1] > MAX_SERIES_LENGTH:
            raise DataError(f"{path} {where}: {trimmed.shape[1]:,} time steps, more than the {MAX_SERIES_LENGTH:,} "
                            f"fewbit reads")
        if self.series and trimmed.shape[0] != self.series[0].shape[0]:
            raise DataError(f"{path} {where}: {trimmed.shape[0]} channel(s), {self.first_where} has "
                            f"{self.series[0].shape[0]}; every series needs the same channels")
        if len(self.series) >= MAX_SERIES_COUNT:
            raise DataError(f"{path}: more than {MAX_SERIES_COUNT:,} series, more than fewbit reads")
        self.total += trimmed.size
        if self.total > MAX_TOTAL_VALUES:
            raise DataError(f"{path}: more than {MAX_TOTAL_VALUES:,} values, more than fewbit reads")
        if not self.series:
            self.first_where = where
        self.series.append(trimmed)
        self.labels.append(label)

    def collection(self, notes: dict[str, Any]) -> SeriesCollection:
        if not self.series:
            raise DataError(f"{self.path} holds no series")
        return SeriesCollection(self.series, self.labels, origins=[self.path.name] * len(self.series), notes=notes)


def _trim(values: np.ndarray, path: Path, where: str, cell: Callable[[int, int], str]) -> np.ndarray:
    """float32 `[C, T']`: trailing time steps missing in every channel dropped; other missing values,
    infinities and values beyond float32 refused (DataError naming the cell)."""
    missing = np.isnan(values)
    if missing.any():
        present = np.flatnonzero(~missing.all(axis=0))
        if present.size == 0:
            raise DataError(f"{path} {where}: every value is missing (an empty series)")
        values, missing = values[:, : present[-1] + 1], missing[:, : present[-1] + 1]
        if missing.any():
            c, t = (int(v[0]) for v in np.nonzero(missing))
            raise DataError(f"{path} {cell(c, t)}: a missing value inside the series (only trailing padding "
                            f"is trimmed); fewbit does not guess missing values (fill or drop them first)")
    if values.shape[1] == 0:
        raise DataError(f"{path} {where}: an empty series")
    big = ~(np.abs(values) <= _FLOAT32_MAX)
    if big.any():
        c, t = (int(v[0]) for v in np.nonzero(big))
        what = "infinite" if np.isinf(values[c, t]) else "beyond float32's range"
        raise DataError(f"{path} {cell(c, t)}: {what}; fewbit needs finite values")
    return values.astype(np.float32)


def _stack(rows: list[np.ndarray], path: Path, line_no: int) -> np.ndarray:
    """`[C, T]` of one line's dimensions; shorter dimensions are padded with missing values (then refused
    by `_trim` unless every channel is missing there)."""
    length = max(len(r) for r in rows)
    out = np.full((len(rows), length), np.nan)
    for d, r in enumerate(rows):
        out[d, : len(r)] = r
    return out


def _numbers(cells: Sequence[str], name: Callable[[int], str], path: Path) -> np.ndarray:
    """float64 of `cells`, missing tokens (`MISSING_TOKENS`) as NaN; DataError naming a cell that is not a number."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(cells), np.float64)
    for j, raw in enumerate(cells):
        cell = raw.strip()
        if cell.lower() in MISSING_TOKENS:
            out[j] = math.nan
            continue
        value = _number(cell)
        if value is None:
            raise DataError(f"{path} {name(j)}: {cell[:20]!r} is not a number")
        out[j] = value
    return out


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _label(cell: str) -> str:
    """A label cell as a class name: stripped; an integral number written as a float (`1.0e+00`) as an integer."""
    label = cell.strip()
    if any(ch in label for ch in ".eE"):
        value = _number(label)
        if value is not None and math.isfinite(value) and value == int(value) and abs(value) < 2**53:
            return str(int(value))
    return label


def _text(path: Path) -> str:
    data = read_input_file(path, MAX_SOURCE_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number from 1, line) of `text`, one at a time (a 1 GiB file is not split into a list at once)."""
    start, n = 0, 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        n += 1
        line = text[start:end]
        yield n, line[:-1] if line.endswith("\r") else line
        start = end + 1
