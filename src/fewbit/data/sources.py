"""Data sources named by one spec string, the same in the CLI, YAML and the API.

    glyphs | sinusoid | omniglot:PATH | omniglot-minimal:DIR | folder:PATH | csvsplit:PATH | csv:PATH

`DataOptions` says how to read them (image size, channels, inversion, normalisation, splits,
the label column of a table). A source holds its splits and the preprocessing that made them,
which a run and its artifact carry, so the runtime prepares inputs exactly as training did.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fewbit.config import check
from fewbit.data.dataset import ImageDataset
from fewbit.data.splits import split_by_alphabet
from fewbit.data.table import TableDataset
from fewbit.errors import ConfigError, DataError
from fewbit.runtime.preprocess import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    RESIZE_RULES,
    ImagePreprocessing,
    Preprocessing,
    TablePreprocessing,
)

SPLITS = ("train", "val", "test", "all")
JOINED_SPLIT = "train+val"  # a final model's training classes once validation has chosen its recipe
SPEC_HELP = "glyphs | sinusoid | omniglot:PATH | omniglot-minimal:DIR | folder:PATH | csvsplit:PATH | csv:PATH"

# Omniglot minimal protocol: meta-test on the small2 alphabets that small1 lacks.
MINIMAL_SMALL1 = "images_background_small1.zip"
MINIMAL_SMALL2 = "images_background_small2.zip"
MINIMAL_VAL_EVERY = 5  # every 5th character of each small1 alphabet is held out for validation
# Ink data (Omniglot, glyphs): strokes are 1 on 0; a user's drawing is inverted when its paper is light.
INK_PREPROCESSING = {"channels": 1, "invert": "auto", "resize": "stretch", "resample": "lanczos"}
OWNER = "DataOptions"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How to read a data source.

    `channels`: 1 or 3 to force greyscale or RGB, None to detect (RGB when any image holds colour);
    ink sources (Omniglot, glyphs) are greyscale. `invert`: invert image files (for dark strokes on
    light paper read through `folder:`). `normalize`: standardise each channel with the training
    split's mean and std (folder and csvsplit data; ink data stay 0/1). `resize`: "crop" (shorter
    side to `image_size`, centre crop) or "stretch". `split_fractions`: the train and val shares of
    a seeded class- (or group-) disjoint split, test takes the rest. `label_column`: a table's
    label column (None: the last). `progress`: progress bars while decoding.
    """

    image_size: int = 28
    channels: int | None = None
    invert: bool = False
    normalize: bool = True
    resize: str = "crop"
    split_fractions: tuple[float, float] = (0.6, 0.2)
    split_seed: int = 0
    label_column: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        size = self.image_size
        check(isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE,
              OWNER, "image_size", f"must be a whole number of pixels {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {size!r}")
        check(self.channels in (None, 1, 3) and not isinstance(self.channels, bool), OWNER, "channels",
              f"must be 1 (greyscale), 3 (RGB) or null (detect), got {self.channels!r}")
        for name in ("invert", "normalize", "progress"):
            value = getattr(self, name)
            check(isinstance(value, bool), OWNER, name, f"must be true or false, got {value!r}")
        check(self.resize in RESIZE_RULES, OWNER, "resize",
              f"must be one of {', '.join(RESIZE_RULES)}, got {self.resize!r}")
        fr = self.split_fractions
        ok = (isinstance(fr, (tuple, list)) and len(fr) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in fr))
        check(ok and fr[0] > 0 and fr[1] > 0 and fr[0] + fr[1] < 1, OWNER, "split_fractions",
              f"must be [train, val] shares > 0 whose sum is < 1 (test takes the rest), got {fr!r}")
        object.__setattr__(self, "split_fractions", (float(fr[0]), float(fr[1])))
        check(isinstance(self.split_seed, int) and not isinstance(self.split_seed, bool)
              and abs(self.split_seed) < 2**63, OWNER, "split_seed", f"must be an integer, got {self.split_seed!r}")
        check(self.label_column is None or (isinstance(self.label_column, str) and bool(self.label_column)),
              OWNER, "label_column", f"must be a column name or null, got {self.label_column!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSource:
    """An image data source with named splits, the preprocessing that decoded them, and notes."""

    spec: str
    splits: dict[str, ImageDataset]
    preprocessing: ImagePreprocessing = dataclasses.field(
        default_factory=lambda: ImagePreprocessing(**INK_PREPROCESSING)  # type: ignore[arg-type]
    )
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "images"

    def split(self, name: str) -> ImageDataset:
        """The split `name` (train, val, test, all, or train+val: the training and validation classes)."""
        if name == JOINED_SPLIT:
            from fewbit.data.dataset import concat

            return concat([self.split("train"), self.split("val")], f"{self.spec}[{JOINED_SPLIT}]")
        if name not in self.splits:
            raise DataError(f"{self.spec}: no split {name!r}; choose one of {', '.join(self.splits)}")
        return self.splits[name]

    def info(self, split: str = "all") -> dict[str, object]:
        """Counts of `split`, plus the classes and images of every split."""
        out = dict(self.split(split).info())
        out["spec"] = self.spec
        out["kind"] = self.kind
        out["split"] = split
        out["splits"] = {name: ds.num_classes for name, ds in self.splits.items()}
        out["split_images"] = {name: ds.num_images for name, ds in self.splits.items()}
        out["preprocessing"] = self.preprocessing.to_dict()
        out.update(self.notes)
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class TableSource:
    """A table (`csv:PATH`) with class-disjoint splits and the standardisation of its training split."""

    spec: str
    splits: dict[str, TableDataset]
    preprocessing: TablePreprocessing
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "table"

    def split(self, name: str) -> TableDataset:
        """The split `name` (train, val, test, all, or train+val: the training and validation classes)."""
        if name == JOINED_SPLIT:
            return self.split("train").join(self.split("val"), f"{self.spec}[{JOINED_SPLIT}]")
        if name not in self.splits:
            raise DataError(f"{self.spec}: no split {name!r}; choose one of {', '.join(self.splits)}")
        return self.splits[name]

    def info(self, split: str = "all") -> dict[str, object]:
        out = dict(self.split(split).info())
        out.update(spec=self.spec, kind=self.kind, split=split,
                   splits={name: ds.num_classes for name, ds in self.splits.items()},
                   split_images={name: ds.num_images for name, ds in self.splits.items()},
                   preprocessing={k: v for k, v in self.preprocessing.to_dict().items() if k not in ("mean", "std")})
        out.update(self.notes)
        return out


@dataclasses.dataclass(frozen=True)
class RegressionSource:
    """A regression task family (sinusoid)."""

    spec: str
    kind: str = "regression"

    def info(self, split: str = "all") -> dict[str, object]:
        from fewbit.data.sinusoid import SinusoidSampler

        return {"spec": self.spec, **SinusoidSampler.info()}


Source = ImageSource | TableSource | RegressionSource
ClassDataset = ImageDataset | TableDataset  # what episodes are drawn from


def _ink(options: DataOptions, what: str) -> ImagePreprocessing:
    if options.channels not in (None, 1):
        raise ConfigError(f"{OWNER}.channels: {what} is greyscale; leave channels unset or give 1")
    return ImagePreprocessing(image_size=options.image_size, **INK_PREPROCESSING)  # type: ignore[arg-type]


def _glyphs(arg: str, options: DataOptions) -> ImageSource:
    from fewbit.data.glyphs import load_glyphs

    if arg:
        raise DataError(f"glyphs takes no argument, got 'glyphs:{arg}'")
    pre = _ink(options, "glyphs")
    ds = load_glyphs(image_size=options.image_size)
    return ImageSource("glyphs", split_by_alphabet(ds, options.split_fractions, options.split_seed), pre)


def _omniglot(arg: str, options: DataOptions) -> ImageSource:
    from fewbit.data.omniglot import load_omniglot

    if not arg:
        raise DataError("omniglot needs a path: omniglot:PATH (a background zip or its extracted folder)")
    pre = _ink(options, "Omniglot")
    ds = load_omniglot(Path(arg).expanduser(), image_size=options.image_size)
    return ImageSource(f"omniglot:{arg}", split_by_alphabet(ds, options.split_fractions, options.split_seed), pre)


def _omniglot_minimal(arg: str, options: DataOptions) -> ImageSource:
    from fewbit.data.omniglot import load_omniglot

    pre = _ink(options, "Omniglot")
    root = Path(arg or ".").expanduser()
    if not root.is_dir():
        raise DataError(
            f"omniglot-minimal:{arg}: {root} is not a folder; give the folder holding both background-small zips"
        )
    paths = []
    for name in (MINIMAL_SMALL1, MINIMAL_SMALL2):
        p = root / name
        if not p.exists() and (root / name[: -len(".zip")]).is_dir():
            p = root / name[: -len(".zip")]
        if not p.exists():
            raise DataError(f"omniglot-minimal:{arg}: {name} (or its extracted folder) is missing from {root}")
        paths.append(p)
    small1 = load_omniglot(paths[0], image_size=options.image_size)
    small2 = load_omniglot(paths[1], image_size=options.image_size)
    test_alphabets = [a for a in small2.alphabets if a not in set(small1.alphabets)]
    val_ids = [i for i, c in enumerate(small1.classes) if _char_number(c) % MINIMAL_VAL_EVERY == 0]
    train_ids = [i for i in range(small1.num_classes) if i not in set(val_ids)]
    splits = {
        "train": small1.subset_classes(train_ids, "omniglot-minimal[train]"),
        "val": small1.subset_classes(val_ids, "omniglot-minimal[val]"),
        "test": small2.subset_alphabets(test_alphabets, "omniglot-minimal[test]"),
    }
    splits["all"] = small1
    return ImageSource(f"omniglot-minimal:{arg}", splits, pre)


def _folder_options(options: DataOptions) -> Any:
    from fewbit.data.folder import FolderOptions

    rule = ImagePreprocessing(image_size=options.image_size, channels=options.channels or 3,
                              invert=options.invert, resize=options.resize, resample="lanczos")
    return FolderOptions(rule, options.channels is None, options.normalize, options.split_fractions,
                         options.split_seed, options.progress)


def _folder(arg: str, options: DataOptions) -> ImageSource:
    from fewbit.data.folder import load_folder

    if not arg:
        raise DataError("folder needs a path: folder:PATH (one sub-folder of images per class)")
    data = load_folder(Path(arg), _folder_options(options))
    return ImageSource(f"folder:{arg}", data.splits, data.preprocessing, data.notes)


def _csvsplit(arg: str, options: DataOptions) -> ImageSource:
    from fewbit.data.folder import load_csvsplit

    if not arg:
        raise DataError("csvsplit needs a path: csvsplit:PATH (a folder with train.csv, val.csv, test.csv and images)")
    data = load_csvsplit(Path(arg), _folder_options(options))
    return ImageSource(f"csvsplit:{arg}", data.splits, data.preprocessing, data.notes)


def _char_number(class_name: str) -> int:
    digits = "".join(ch for ch in class_name.rsplit("/", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


_IMAGE_SOURCES: dict[str, Callable[[str, DataOptions], ImageSource]] = {
    "glyphs": _glyphs,
    "omniglot": _omniglot,
    "omniglot-minimal": _omniglot_minimal,
    "folder": _folder,
    "csvsplit": _csvsplit,
}
KINDS = ("sinusoid", "csv", *_IMAGE_SOURCES)


def load_source(spec: str, *, image_size: int | None = None, options: DataOptions | None = None) -> Source:
    """The data source named by `spec` (see SPEC_HELP), read per `options` (`image_size` is a shortcut).

        >>> source = load_source("folder:~/photos", options=DataOptions(image_size=84))
        >>> source.split("train").num_classes
    """
    if options is None:
        options = DataOptions(image_size=28 if image_size is None else image_size)
    elif image_size is not None and image_size != options.image_size:
        options = dataclasses.replace(options, image_size=image_size)
    if not isinstance(spec, str) or not spec:
        raise DataError(f"empty data spec; use one of: {SPEC_HELP}")
    kind, _, arg = spec.partition(":")
    if kind == "sinusoid":
        if arg:
            raise DataError(f"sinusoid takes no argument, got {spec!r}")
        return RegressionSource("sinusoid")
    if kind == "csv":
        from fewbit.data.table import load_table_source

        if not arg:
            raise DataError("csv needs a path: csv:PATH (a CSV table with a label column)")
        splits, pre, notes = load_table_source(Path(arg), label_column=options.label_column,
                                               fractions=options.split_fractions, seed=options.split_seed)
        return TableSource(spec, splits, pre, notes)
    if kind not in _IMAGE_SOURCES:
        raise DataError(f"unknown data source {kind!r}; use one of: {SPEC_HELP}")
    return _IMAGE_SOURCES[kind](arg, options)


def load_split(spec: str, split: str, *, image_size: int | None = None,
               options: DataOptions | None = None) -> ClassDataset:
    """The split `split` of the source `spec`."""
    source = load_source(spec, image_size=image_size, options=options)
    if isinstance(source, RegressionSource):
        raise DataError(f"{spec} is a regression source; it has no splits")
    return source.split(split)


def source_kind(spec: str) -> str:
    """The kind of source a spec names ("images", "table" or "regression") without reading it."""
    kind = spec.partition(":")[0] if isinstance(spec, str) else ""
    return {"sinusoid": "regression", "csv": "table"}.get(kind, "images")


def options_for(pre: Preprocessing, base: DataOptions | None = None) -> DataOptions:
    """Data options that decode new data the way `pre` says (to evaluate a run on another source)."""
    base = base or DataOptions()
    if isinstance(pre, TablePreprocessing):
        return dataclasses.replace(base, label_column=pre.label_column)
    invert = pre.invert if isinstance(pre.invert, bool) else base.invert
    return dataclasses.replace(base, image_size=pre.image_size, channels=pre.channels, invert=invert,
                               resize=pre.resize)
