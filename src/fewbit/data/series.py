"""Signals as data sources: `series:PATH` (a user's series, in any layout `series_files` reads)
and `signals` (the embedded, procedurally generated family of series classes).

A series of C channels is a one-row image `[C, 1, length]` once `SeriesPreprocessing` has brought
it to `length` steps (the length rule) and normalised it (per-series z-score by default); every
split draws from one array prepared once, and the preprocessing travels in the run and in the
artifact, so `fewbit adapt` and the numpy runtime prepare a new series exactly as training did.
Classes are split as images are: by group when the layout gives groups (folders, or the
generated families), else by class; `train/ val/ test/` folders are kept as given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewbit.config import brief, check, setting
from fewbit.data.augment import augment_series
from fewbit.data.options import CHANNELS_HELP, SplitOptions
from fewbit.data.registry import register_source
from fewbit.data.series_files import SeriesCollection, read_series_source
from fewbit.data.signals import DEFAULT_LENGTH, generate_signals
from fewbit.data.splits import hold_out, split_classes
from fewbit.errors import DataError
from fewbit.runtime.series import (
    LENGTH_RULES,
    MAX_SERIES_CHANNELS,
    MAX_SERIES_LENGTH,
    SERIES_NORMS,
    SeriesPreprocessing,
)

MAX_PREPARED_VALUES = 400_000_000  # float32 values of one prepared source (1.6 GB): refused before allocating
SERIES_AUGMENTS = ("auto", "series")  # the recipes that warp series (`auto` is `series` here)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesOptions(SplitOptions):
    """How series are read: brought to `length` steps by `length_rule` (resample, crop or pad;
    None: the source's longest series, or 128 for the generated signals) and normalised by
    `series_norm` (zscore: each series and channel on its own; global: the training split's
    per-channel statistics; none). `channels` checks (or, for signals, sets) the channel count;
    `label_column` names a CSV's label column."""

    length: int | None = setting(None, "bring every series to N steps (default: the longest; signals: 128)",
                                 metavar="N")
    length_rule: str = setting("resample", "resample (interpolate to the length), crop or pad (centre crop when "
                               "longer; crop centres a shorter series, pad aligns it at the start)",
                               choices=LENGTH_RULES)
    series_norm: str = setting("zscore", "per-series z-score (default), the training split's per-channel "
                               "statistics (global), or none", choices=SERIES_NORMS)
    channels: int | None = setting(None, CHANNELS_HELP, metavar="C")
    label_column: str | None = setting(None, "a csv: table's label column (default: the last)", metavar="NAME")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.length is None or (isinstance(self.length, int) and not isinstance(self.length, bool)
                                      and 1 <= self.length <= MAX_SERIES_LENGTH), self.owner, "length",
              f"must be a number of steps 1..{MAX_SERIES_LENGTH} or null, got {brief(self.length)}")
        check(self.length_rule in LENGTH_RULES, self.owner, "length_rule",
              f"must be one of {', '.join(LENGTH_RULES)}, got {brief(self.length_rule)}")
        check(self.series_norm in SERIES_NORMS, self.owner, "series_norm",
              f"must be one of {', '.join(SERIES_NORMS)}, got {brief(self.series_norm)}")
        check(self.channels is None or (isinstance(self.channels, int) and not isinstance(self.channels, bool)
                                        and 1 <= self.channels <= MAX_SERIES_CHANNELS), self.owner, "channels",
              f"must be 1..{MAX_SERIES_CHANNELS} or null, got {brief(self.channels)}")
        check(self.label_column is None or (isinstance(self.label_column, str) and bool(self.label_column)),
              self.owner, "label_column", f"must be a column name or null, got {brief(self.label_column)}")

    def input_shape_hint(self) -> tuple[int, ...] | None:
        return (self.channels or 1, 1, self.length) if self.length else None

    def for_preprocessing(self, preprocessing: Any) -> SeriesOptions:
        return dataclasses.replace(self, length=preprocessing.length, length_rule=preprocessing.length_rule,
                                   series_norm=preprocessing.norm, channels=preprocessing.channels)


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesDataset:
    """Labelled series prepared as one float32 array `[N, C, 1, length]`, grouped into classes.

    The interface of `ImageDataset` where episodes need it (`labels`, `classes`, `tensor`,
    `subset_classes`, ...): an "image" here is a series. `raw` keeps the series as read, so
    `prepared_as` can prepare them again the way another model's preprocessing says.
    """

    name: str
    raw: Sequence[np.ndarray]  # [C, T_i] float32, as read (shared by every split)
    values: np.ndarray  # [n_all, C, 1, L] float32, prepared by `preprocessing`
    labels: np.ndarray  # [n] int64
    classes: tuple[str, ...]
    class_alphabet: tuple[str, ...]  # each class's group ("" when the layout has none)
    preprocessing: SeriesPreprocessing
    rows: np.ndarray | None = None

    rotatable = False  # a series has a direction in time: turning it is no new class
    unit = "series"  # what one example is called in messages

    def __post_init__(self) -> None:
        if self.labels.shape != (self.num_images,):
            raise DataError(f"{self.name}: {self.labels.shape[0]} labels for {self.num_images} series")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_images(self) -> int:
        return int(self.values.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def length(self) -> int:
        return int(self.values.shape[3])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """`(C, 1, length)` of one drawn series."""
        return (self.channels, 1, self.length)

    @property
    def alphabets(self) -> tuple[str, ...]:
        """The groups present, in first-seen order."""
        return tuple(dict.fromkeys(self.class_alphabet))

    @property
    def mean(self) -> tuple[float, ...]:  # what a plot un-normalises with: series are drawn as prepared
        return (0.0,) * self.channels

    @property
    def std(self) -> tuple[float, ...]:
        return (1.0,) * self.channels

    def take(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        return self.values[index if self.rows is None else self.rows[index]]

    def tensor(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 `[len(index), C, 1, length]` of series `index`, as prepared."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(np.ascontiguousarray(self.take(index)))

    def augment_recipe(self, recipe: str) -> str:
        """`auto` and `series` warp series (`fewbit.data.augment.augment_series`); none is none;
        an image recipe is a ValueError naming the series ones."""
        if recipe == "none":
            return "none"
        if recipe not in SERIES_AUGMENTS:
            raise ValueError(f"{recipe} augments images; series take {', '.join(SERIES_AUGMENTS)} or none")
        return "series"

    def augmented(self, index: np.ndarray | torch.Tensor, recipe: str, generator: torch.Generator) -> torch.Tensor:
        """Like `tensor`, each series warped (jitter, scaling, magnitude and time warps, window crops)."""
        return augment_series(self.tensor(index), generator)

    def images_per_class(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def smallest_class(self) -> tuple[str, int]:
        per_class = self.images_per_class()
        if not per_class.size:
            return "", 0
        c = int(per_class.argmin())
        return self.classes[c], int(per_class[c])

    def subset_classes(self, class_ids: Sequence[int], name: str | None = None) -> SeriesDataset:
        """A dataset holding only `class_ids`, relabelled 0..len-1 in the given order (nothing copied)."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        keep = np.flatnonzero(remap[self.labels] >= 0)
        return dataclasses.replace(self, name=name or self.name, labels=remap[self.labels[keep]],
                                   classes=tuple(self.classes[i] for i in class_ids),
                                   class_alphabet=tuple(self.class_alphabet[i] for i in class_ids),
                                   rows=keep if self.rows is None else self.rows[keep])

    def subset_alphabets(self, groups: Sequence[str], name: str | None = None) -> SeriesDataset:
        """A dataset holding only the classes of `groups`."""
        wanted = set(groups)
        return self.subset_classes([i for i, g in enumerate(self.class_alphabet) if g in wanted], name)

    def join(self, other: SeriesDataset, name: str) -> SeriesDataset:
        """This dataset's classes and `other`'s (a split of the same source), nothing copied."""
        if other.values is not self.values:
            raise DataError(f"{name}: only splits of one source can be joined")
        if set(self.classes) & set(other.classes):
            raise DataError(f"{name}: class names collide when joining {self.name} and {other.name}")
        rows = [np.arange(d.num_images) if d.rows is None else d.rows for d in (self, other)]
        labels = np.concatenate([self.labels, other.labels + self.num_classes])
        return dataclasses.replace(self, name=name, labels=labels,
                                   classes=self.classes + other.classes,
                                   class_alphabet=self.class_alphabet + other.class_alphabet,
                                   rows=np.concatenate(rows))

    def prepared_as(self, preprocessing: Any) -> SeriesDataset:
        """The same series prepared the way `preprocessing` (a trained model's) says."""
        if not isinstance(preprocessing, SeriesPreprocessing):
            raise DataError(f"{self.name} holds series; the model takes {preprocessing.kind} inputs")
        if preprocessing == self.preprocessing:
            return self
        return dataclasses.replace(self, values=_prepare(preprocessing, self.raw, self.name),
                                   preprocessing=preprocessing)

    def info(self) -> dict[str, object]:
        per_class = self.images_per_class()
        lengths = [int(self.raw[int(i)].shape[1]) for i in (np.arange(len(self.raw)) if self.rows is None
                                                           else self.rows)]
        return {"name": self.name, "groups": len([a for a in self.alphabets if a]), "classes": self.num_classes,
                "series": self.num_images, "images": self.num_images, "channels": self.channels,
                "length_min": min(lengths, default=0), "length_max": max(lengths, default=0),
                "length": self.length, "series_per_class_min": int(per_class.min()) if per_class.size else 0,
                "images_per_class_min": int(per_class.min()) if per_class.size else 0}


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesSource:
    """Series with class-disjoint splits and the preprocessing that prepared them."""

    spec: str
    splits: dict[str, SeriesDataset]
    preprocessing: SeriesPreprocessing
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "series"
    summary = ("groups", "classes", "series", "channels", "length_min", "length_max", "length",
               "series_per_class_min")

    def split(self, name: str) -> SeriesDataset:
        """The split `name` (train, val, test, all, or train+val)."""
        if name == "train+val":
            return self.split("train").join(self.split("val"), f"{self.spec}[train+val]")
        if name not in self.splits:
            raise DataError(f"{self.spec}: no split {name!r}; choose one of {', '.join(self.splits)}")
        return self.splits[name]

    def info(self, split: str = "all") -> dict[str, object]:
        out = dict(self.split(split).info())
        out.update(spec=self.spec, kind=self.kind, split=split,
                   splits={name: ds.num_classes for name, ds in self.splits.items()},
                   split_images={name: ds.num_images for name, ds in self.splits.items()},
                   preprocessing=self.preprocessing.to_dict())
        out.update({k: v for k, v in self.notes.items() if k not in out})
        return out


def series_source(spec: str, data: SeriesCollection, options: SeriesOptions,
                  default_length: int | None) -> SeriesSource:
    """The splits of `data` read per `options`, prepared with the training split's preprocessing."""
    if len(data) == 0:
        raise DataError(f"{spec}: no series")
    channels = data.channels
    if options.channels is not None and options.channels != channels:
        raise DataError(f"{spec}: its series have {channels} channel(s), --channels says {options.channels}")
    length = options.length or default_length or data.length_max
    if len(data) * channels * length > MAX_PREPARED_VALUES:
        raise DataError(f"{spec}: {len(data):,} series of {channels} x {length} values are more than the "
                        f"{MAX_PREPARED_VALUES:,} fewbit prepares at once; lower --length")
    names = sorted(set(data.labels))
    ids = {n: i for i, n in enumerate(names)}
    labels = np.array([ids[v] for v in data.labels], np.int64)
    group_of = dict(zip(data.labels, data.groups)) if data.groups else {}
    class_alphabet = tuple(group_of.get(n, "") for n in names)
    pre = SeriesPreprocessing(channels=channels, length=length, length_rule=options.length_rule)
    # first prepared with zscore/none; a global norm needs the training split's statistics
    base_pre = pre if options.series_norm == "global" else dataclasses.replace(pre, norm=options.series_norm)
    base = SeriesDataset(spec, data.series, _prepare(base_pre, data.series, spec), labels, tuple(names),
                         class_alphabet, base_pre)
    splits, rule = _splits(base, data, options)
    if options.series_norm == "global":
        train = splits["train"]
        rows = np.arange(train.num_images) if train.rows is None else train.rows
        fitted = pre.fit_global([data.series[int(i)] for i in rows])
        prepared = _prepare(fitted, data.series, spec)
        splits = {k: dataclasses.replace(v, values=prepared, preprocessing=fitted) for k, v in splits.items()}
        base_pre = fitted
    notes = {**data.notes, "split_rule": rule}
    return SeriesSource(spec, splits, base_pre, notes)


def _prepare(pre: SeriesPreprocessing, series: Sequence[np.ndarray], where: str) -> np.ndarray:
    try:
        return pre.prepare(series)
    except (DataError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from None


def _splits(base: SeriesDataset, data: SeriesCollection,
            options: SeriesOptions) -> tuple[dict[str, SeriesDataset], str]:
    """Train/val/test splits as the layout gives them, or seeded and class- (group-) disjoint."""
    fractions, seed = options.split_fractions, options.split_seed
    if data.parts:
        parts = {p for p in data.parts}
        part_of = dict(zip(data.labels, data.parts))
        splits = {p: base.subset_classes([i for i, c in enumerate(base.classes) if part_of[c] == p],
                                         f"{base.name}[{p}]") for p in sorted(parts)}
        if "val" not in splits:
            splits["train"], splits["val"] = hold_out(splits["train"], fractions[1] / sum(fractions), seed)
            rule = f"explicit train/test; val held out of train (seed {seed})"
        else:
            rule = "explicit train/val/test folders"
        splits["all"] = base
        return splits, rule
    splits = split_classes(base, fractions, seed)  # type: ignore[arg-type]
    kind = "group" if any(base.class_alphabet) else "class"
    rule = (f"seeded {kind}-disjoint split, fractions {fractions[0]:g}/{fractions[1]:g}/"
            f"{1 - sum(fractions):g} (seed {seed})")
    return splits, rule  # type: ignore[return-value]


@register_source("series", options=SeriesOptions, kind="series", path=True, backbone="conv1d",
                 help="your signals: a .ts or UCR text file, a folder of <Name>_TRAIN/_TEST files, class folders "
                      "of .csv/.npy samples (grouped, or under train/ val/ test/), or a labelled CSV")
def series_files_source(arg: str, options: SeriesOptions, *, progress: bool = True) -> SeriesSource:
    """`series:PATH`: a user's series, in any layout `fewbit.data.series_files` reads."""
    data = read_series_source(Path(arg).expanduser(), label_column=options.label_column)
    return series_source(f"series:{arg}", data, options, None)


@register_source("signals", options=SeriesOptions, kind="series", path=False, backbone="conv1d",
                 help="the embedded signals: 600 generated classes of shapes, rhythms, trends and bursts on 3 "
                      "channels, 20 series each, family-disjoint splits")
def signals_source(arg: str, options: SeriesOptions, *, progress: bool = True) -> SeriesSource:
    """`signals`: the generated family (`fewbit.data.signals`), generated at the options' length."""
    length = options.length or DEFAULT_LENGTH
    data = generate_signals(length=length, channels=options.channels)
    return series_source("signals", data, options, length)
