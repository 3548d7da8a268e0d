"""How raw time series become model inputs: the same code at training time, in `fewbit adapt` and in the runtime.

A series of C channels and T time steps is an array `[C, T]`. A model sees it as a one-row image
`[C, 1, length]` (float32), so a Conv-4 with 1x3 kernels and (1, 2) pooling, and every compression,
runtime and C-export path written for images, applies unchanged. `SeriesPreprocessing` records how
a series gets there (in an artifact's manifest, as `to_dict()`), and `prepare` does it:

1. The series is cast to float32 (values beyond float32's range, NaN and infinity are refused).
2. The length rule picks the samples the model sees (T is the series' length):

   - `resample`: `length` points by linear interpolation over the whole span; point j lies at
     position `j * (T - 1) / (length - 1)` of the series (0 .. T-1, so the first and last samples
     are kept exactly); a series of one sample becomes a constant; `length == 1` takes the centre.
   - `crop`: the series centred in the window. Longer: the centre `length` samples, starting at
     `(T - length) // 2`. Shorter: all T samples, preceded by `(length - T) // 2` zeros and
     followed by the rest.
   - `pad`: the series aligned at the start. Longer: the centre `length` samples, as `crop`.
     Shorter: all T samples followed by `length - T` zeros.

3. The norm is applied to the samples picked (never to the padding), per channel:

   - `zscore`: `(x - mean) / max(std, ZSCORE_EPSILON)` with the mean and (population) standard
     deviation of this series' picked samples; a flat channel becomes exactly 0.
   - `global`: `(x - mean[c]) / std[c]` with the training split's statistics stored in the
     preprocessing (`fit_global`, `global_statistics`).
   - `none`: the values as they are.

4. Padding comes last, as zeros in normalised units: the series' own mean under `zscore`, the
   training mean under `global`, 0 under `none`. A zero-padded raw value (0 volts beside a
   series at 230 volts) would otherwise look like a step the model must learn to ignore.

Statistics are accumulated in float64 from the float32 samples and the result is cast to float32,
so the same numpy gives the same bits in training and on the device. Numpy only (no torch).

`read_series_file` reads one sample file (`.csv` or `.npy`) as the runtime and `fewbit adapt` do,
bounded before anything is allocated: regular files only, at most `MAX_SERIES_FILE_BYTES`,
`MAX_SERIES_LENGTH` time steps and `MAX_SERIES_CHANNELS` channels.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.errors import DataError
from fewbit.runtime.limits import MIN_STD
from fewbit.runtime.preprocess import read_input_file, register_preprocessing

LENGTH_RULES = ("resample", "crop", "pad")
SERIES_NORMS = ("zscore", "none", "global")
MAX_SERIES_LENGTH = 65_536  # time steps of one series, as read and as a model's input length
MAX_SERIES_CHANNELS = 64
MAX_SERIES_FILE_BYTES = 128 << 20  # one sample file: 65,536 rows of 64 numbers fit with room to spare
MAX_GLOBAL_STAT = 1e6  # |mean| and std of norm "global": what an artifact's manifest may carry
ZSCORE_EPSILON = 1e-8  # zscore divides by max(std, this)
SERIES_FILE_SUFFIXES = (".csv", ".npy")
_DELIMITERS = ("\t", ";", ",")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NPY_KINDS = "fiu"  # float, signed and unsigned integer arrays; no bool, complex, object or records


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any, field: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= high:
        raise ValueError(f"preprocessing.{field}: must be a whole number 1..{high}, got {value!r}")
    return int(value)


@register_preprocessing
@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesPreprocessing:
    """Series `[C, T]` -> float32 `[channels, 1, length]`: the length rule, then the norm (module docstring).

        pre = SeriesPreprocessing(channels=3, length=128)            # resample, per-series zscore
        x = pre.prepare([a, b])                                       # [2, 3, 1, 128] float32
        pre = SeriesPreprocessing(channels=3, length=128, norm="global").fit_global(train_series)

    `mean` and `std` (one value per channel, or one for all) are used by `norm="global"` only, which
    needs them; the other norms take none.
    """

    channels: int
    length: int
    length_rule: str = "resample"
    norm: str = "zscore"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    kind = "series"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", _whole(self.channels, "channels", MAX_SERIES_CHANNELS))
        object.__setattr__(self, "length", _whole(self.length, "length", MAX_SERIES_LENGTH))
        if self.length_rule not in LENGTH_RULES:
            raise ValueError(f"preprocessing.length_rule: must be one of {', '.join(LENGTH_RULES)}, "
                             f"got {self.length_rule!r}")
        if self.norm not in SERIES_NORMS:
            raise ValueError(f"preprocessing.norm: must be one of {', '.join(SERIES_NORMS)}, got {self.norm!r}")
        for field in ("mean", "std"):
            value = getattr(self, field)
            seq = [value] if _is_number(value) else value
            if not isinstance(seq, (list, tuple)) or not all(_is_number(v) for v in seq):
                raise ValueError(f"preprocessing.{field}: must be a list of finite numbers, got {value!r}")
            if self.norm != "global":
                if seq:
                    raise ValueError(f"preprocessing.{field}: only norm global uses mean and std, "
                                     f"norm {self.norm} takes none")
                continue
            if len(seq) == 1:
                seq = list(seq) * self.channels
            if len(seq) != self.channels:
                raise ValueError(f"preprocessing.{field}: norm global needs 1 or {self.channels} values (one per "
                                 f"channel, the training split's; see fit_global), got {len(seq)}")
            object.__setattr__(self, field, tuple(float(v) for v in seq))
        if self.norm == "global":
            if any(abs(m) > MAX_GLOBAL_STAT for m in self.mean):
                raise ValueError(f"preprocessing.mean: values beyond +-{MAX_GLOBAL_STAT:g} cannot be stored "
                                 f"in an artifact; use norm zscore, got {list(self.mean)}")
            if not all(MIN_STD <= s <= MAX_GLOBAL_STAT for s in self.std):
                raise ValueError(f"preprocessing.std: every value must be in [{MIN_STD:g}, {MAX_GLOBAL_STAT:g}], "
                                 f"got {list(self.std)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`(channels, 1, length)`: a series is a one-row image."""
        return self.channels, 1, self.length

    def to_dict(self) -> dict[str, Any]:
        """The manifest form (JSON-ready)."""
        return {"kind": self.kind, "channels": self.channels, "length": self.length,
                "length_rule": self.length_rule, "norm": self.norm, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesPreprocessing:
        """From a manifest's `preprocessing` block; missing keys take the defaults, unknown keys are
        ignored. ValueError naming the field when invalid (channels and length are required)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"preprocessing: must be a mapping, got {type(data).__name__}")
        if data.get("kind", cls.kind) != cls.kind:
            raise ValueError(f"preprocessing.kind: a series preprocessing is of kind series, got {data['kind']!r}")
        for field in ("channels", "length"):
            if field not in data:
                raise ValueError(f"preprocessing.{field}: missing (a series preprocessing needs channels and length)")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields})

    # -- preparing ------------------------------------------------------------------------------

    def prepare(self, series: Sequence[np.ndarray], *, names: Sequence[str] | None = None) -> np.ndarray:
        """float32 `[N, channels, 1, length]` of N series, each `[channels, T_i]` (a 1-D `[T]` is one channel).

        `names` (one per series, such as file names) are used in error messages. DataError (one
        line) for a series with another channel count, no samples, more than `MAX_SERIES_LENGTH`,
        or a value that is NaN, infinite or beyond float32's range.
        """
        arrays = [self._checked(s, i, names) for i, s in enumerate(series)]
        out = np.zeros((len(arrays), self.channels, 1, self.length), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, a in enumerate(arrays):
            by_length.setdefault(a.shape[1], []).append(i)
        for rows in by_length.values():  # one vectorised pass per distinct length
            picked, offset = _pick(np.stack([arrays[i] for i in rows]), self.length, self.length_rule)
            out[rows, :, 0, offset : offset + picked.shape[2]] = self._normalize(picked)
        return out

    def fit_global(self, series: Sequence[np.ndarray]) -> SeriesPreprocessing:
        """A copy with `norm="global"` and the per-channel mean and std of the samples the length
        rule picks from `series` (the training split; padding excluded), as `prepare` will use them."""
        arrays = [self._checked(s, i, None) for i, s in enumerate(series)]
        if not arrays:
            raise DataError("cannot fit global statistics on no series")
        picked = [_pick(a[None], self.length, self.length_rule)[0][0] for a in arrays]
        mean, std = global_statistics(picked)
        return dataclasses.replace(self, norm="global", mean=mean, std=std)

    def _checked(self, s: Any, i: int, names: Sequence[str] | None) -> np.ndarray:
        where = names[i] if names is not None and i < len(names) else f"series {i}"
        a = np.asarray(s)
        if a.dtype.kind not in "fiu":
            raise DataError(f"{where}: values of type {a.dtype} are not numbers")
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise DataError(f"{where}: a series must be [channels, time], got shape {list(a.shape)}")
        if a.shape[0] != self.channels:
            raise DataError(f"{where} has {a.shape[0]} channel(s), the model takes {self.channels}")
        if a.shape[1] < 1:
            raise DataError(f"{where} is empty (no time steps)")
        if a.shape[1] > MAX_SERIES_LENGTH:
            raise DataError(f"{where} has {a.shape[1]:,} time steps, more than the {MAX_SERIES_LENGTH:,} "
                            f"fewbit reads; cut it into windows first")
        with np.errstate(over="ignore", invalid="ignore"):
            f = a.astype(np.float32)
        bad = ~np.isfinite(f)
        if bad.any():
            c, t = (int(v[0]) for v in np.nonzero(bad))
            value = a[c, t]
            what = "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else f"{value:g}, beyond float32")
            raise DataError(f"{where}: channel {c}, time step {t} is {what}; fewbit needs finite values "
                            f"(fill or drop missing values first)")
        return f

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        """float32 `[n, C, K]` picked samples -> float32, normalised per channel."""
        if self.norm == "none":
            return x
        wide = x.astype(np.float64)
        if self.norm == "global":
            mean = np.asarray(self.mean, np.float64)[None, :, None]
            std = np.asarray(self.std, np.float64)[None, :, None]
        else:
            mean = wide.mean(axis=2, keepdims=True)
            std = np.maximum(np.sqrt(np.square(wide - mean).mean(axis=2, keepdims=True)), ZSCORE_EPSILON)
        return ((wide - mean) / std).astype(np.float32)


def _pick(x: np.ndarray, length: int, rule: str) -> tuple[np.ndarray, int]:
    """(float32 `[n, C, K]` samples of float32 `[n, C, T]` that the rule picks, offset of sample 0 in the window)."""
    t = x.shape[2]
    if t == length:
        return x, 0
    if rule == "resample":
        if t == 1:
            return np.repeat(x, length, axis=2), 0
        # point j at j * (T - 1) / (length - 1): both ends kept exactly; one point: the centre
        pos = np.arange(length, dtype=np.float64) * (t - 1) / (length - 1) if length > 1 else np.array([(t - 1) / 2])
        lo = np.minimum(np.floor(pos).astype(np.int64), t - 2)
        frac = pos - lo
        wide = x.astype(np.float64)
        return (wide[:, :, lo] * (1.0 - frac) + wide[:, :, lo + 1] * frac).astype(np.float32), 0
    if t > length:
        start = (t - length) // 2
        return x[:, :, start : start + length], 0
    return x, ((length - t) // 2 if rule == "crop" else 0)


def global_statistics(series: np.ndarray | Sequence[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of every value of `series`, for `norm="global"`.

    `series` is an array `[N, C, 1, L]` or `[N, C, L]` (every value counts, padding included), or
    a sequence of `[C, T_i]` arrays (what `SeriesPreprocessing.fit_global` passes: the samples the
    length rule picks, without padding). Accumulated in float64; std is the population standard
    deviation, floored at `MIN_STD` (a flat channel is divided by it, not by 0).
    """
    if isinstance(series, np.ndarray):
        if series.ndim not in (3, 4) or series.shape[0] < 1:
            raise DataError(f"global statistics need [N, C, L] or [N, C, 1, L] series, got shape {list(series.shape)}")
        parts = [series.reshape(series.shape[0], series.shape[1], -1).transpose(1, 0, 2).reshape(series.shape[1], -1)]
    else:
        parts = [np.asarray(s) for s in series]
        if not parts:
            raise DataError("global statistics need at least one series")
        if any(p.ndim != 2 or p.shape[0] != parts[0].shape[0] for p in parts):
            raise DataError("global statistics need series of one channel count, each [C, T]")
    channels = parts[0].shape[0]
    count = 0
    total = np.zeros(channels, np.float64)
    for p in parts:
        total += p.astype(np.float64).sum(axis=1)
        count += p.shape[1]
    if count == 0:
        raise DataError("global statistics need at least one time step")
    mean = total / count
    squares = np.zeros(channels, np.float64)
    for p in parts:
        squares += np.square(p.astype(np.float64) - mean[:, None]).sum(axis=1)
    std = np.maximum(np.sqrt(squares / count), MIN_STD)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DataError("global statistics overflowed (values too large for float64 sums)")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ------------------------------------------------------------------------------------- reading files


def read_series_file(path: str | os.PathLike[str]) -> np.ndarray:
    """float32 `[C, T]` of one sample file, as training folders, `fewbit adapt` and the runtime read it.

    `.csv`: rows are time steps, columns channels, separated by tabs, semicolons or commas (the
    first of these the first row holds; none: one column). The first row is a header of names, and
    skipped, when any of its cells is not a number. With semicolons, a decimal comma (`1,5`) is
    read as a decimal point. Empty lines are skipped; every other row needs every cell.
    `.npy`: a 1-D `[T]` array (one channel) or a 2-D `[T, C]` array of numbers (`allow_pickle=False`).

    DataError (one line naming the file, and the line and column of a bad cell) for anything else:
    not a regular file, over `MAX_SERIES_FILE_BYTES`, more than `MAX_SERIES_LENGTH` rows or
    `MAX_SERIES_CHANNELS` columns (refused before the rows are split or the array allocated),
    ragged rows, cells that are not numbers, NaN or infinity.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SERIES_FILE_SUFFIXES:
        raise DataError(f"{path}: a series file must be .csv (rows = time steps) or .npy ([T] or [T, C]), "
                        f"not {suffix or 'a file without a suffix'}")
    data = read_input_file(path, MAX_SERIES_FILE_BYTES)
    values = _read_npy(data, path) if suffix == ".npy" else _read_csv(data, path)
    return values


def _read_npy(data: bytes, path: Path) -> np.ndarray:
    """`[C, T]` float32 of a `.npy` file's bytes; the header's claims are checked before the array is built."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({' '.join(str(exc).split())[:200]})") from None
    if dtype.hasobject or dtype.kind not in _NPY_KINDS or dtype.fields is not None:
        raise DataError(f"{path} holds an array of {dtype}; a series file holds numbers (float or int)")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] == 0):
        raise DataError(f"{path} holds an array of shape {list(shape)}; a series is [T] or [T, channels]")
    steps, channels = shape[0], (shape[1] if len(shape) == 2 else 1)
    if channels > MAX_SERIES_CHANNELS:
        hint = " (arrays are [time, channels]: transpose yours?)" if steps <= MAX_SERIES_CHANNELS else ""
        raise DataError(f"{path} has {channels:,} channels, more than the {MAX_SERIES_CHANNELS} fewbit reads{hint}")
    if steps > MAX_SERIES_LENGTH:
        raise DataError(f"{path} has {steps:,} time steps, more than the {MAX_SERIES_LENGTH:,} fewbit reads")
    if steps < 1:
        raise DataError(f"{path} is empty (no time steps)")
    if len(data) - f.tell() < steps * channels * dtype.itemsize:
        raise DataError(f"{path} is truncated: its header claims {list(shape)} of {dtype}, more than the file holds")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({' '.join(str(exc).split())[:200]})") from None
    table = array.reshape(steps, channels)  # [T, C]
    with np.errstate(over="ignore", invalid="ignore"):
        values = table.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        t, c = (int(v[0]) for v in np.nonzero(bad))
        raw = table[t, c]
        what = "NaN" if np.isnan(raw) else ("infinite" if np.isinf(raw) else f"{raw:g}, beyond float32")
        raise DataError(f"{path}: time step {t}, channel {c} is {what}; fewbit needs finite values")
    return np.ascontiguousarray(values.T)


def _read_csv(data: bytes, path: Path) -> np.ndarray:
    """`[C, T]` float32 of a CSV sample file's bytes (rows = time steps)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the series as a UTF-8 CSV") from None
    if max(text.count("\n"), text.count("\r")) > MAX_SERIES_LENGTH + 2:  # a header and a last newline too
        raise DataError(f"{path} has more than {MAX_SERIES_LENGTH:,} rows (time steps), more than fewbit reads")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DataError(f"{path} holds no rows")
    delimiter = next((d for d in _DELIMITERS if d in lines[0][1]), None)
    cells: list[str] = []
    width = 0
    first_row = 0
    for k, (line_no, line) in enumerate(lines):
        if delimiter is not None and line.count(delimiter) >= MAX_SERIES_CHANNELS:
            raise DataError(f"{path} line {line_no}: more than {MAX_SERIES_CHANNELS} columns (channels); "
                            f"rows are time steps, columns channels")
        row = [c.strip() for c in (line.split(delimiter) if delimiter else [line])]
        if k == 0:
            width = len(row)
            if any(_number(c, delimiter) is None for c in row):
                first_row = 1  # a header of names
                continue
        if len(row) != width:
            raise DataError(f"{path} line {line_no}: {len(row)} cells, the first row has {width}")
        cells.extend(row)
    steps = len(lines) - first_row
    if steps < 1:
        raise DataError(f"{path} holds a header but no rows")
    if steps > MAX_SERIES_LENGTH:
        raise DataError(f"{path} has {steps:,} rows (time steps), more than the {MAX_SERIES_LENGTH:,} fewbit reads")
    try:
        values = np.array(cells if delimiter != ";" else [c.replace(",", ".") for c in cells], dtype=np.float64)
    except ValueError:
        values = None
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = None if values is None else values.astype(np.float32)
    if narrow is None or not np.isfinite(narrow).all():
        for i, cell in enumerate(cells):  # find the first bad cell and name it
            value = _number(cell, delimiter)
            if value is not None and math.isfinite(value) and abs(value) <= _FLOAT32_MAX:
                continue
            if value is None:
                what = f"{cell[:20]!r} is not a number" if cell else "an empty cell"
            else:
                what = "NaN" if math.isnan(value) else ("infinite" if math.isinf(value) else "beyond float32")
            line_no = lines[first_row + i // width][0]
            raise DataError(f"{path} line {line_no}, column {i % width + 1}: {what}; fewbit needs every cell "
                            f"to be a finite number")
    assert narrow is not None
    return np.ascontiguousarray(narrow.reshape(steps, width).T)


def _number(cell: str, delimiter: str | None = None) -> float | None:
    """The number in a cell (a decimal comma when cells are separated by semicolons), or None."""
    if delimiter == ";" and "," in cell and "." not in cell:
        cell = cell.replace(",", ".")
    try:
        return float(cell)
    except ValueError:
        return None
