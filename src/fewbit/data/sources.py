"""Data sources named by one spec string, the same in the CLI, YAML and the API.

    glyphs | sinusoid | omniglot:PATH | omniglot-minimal:DIR | folder:PATH | csvsplit:PATH | csv:PATH | ...

Every kind registers itself (`fewbit.data.registry`): its spec token, its frozen options
dataclass (how to read it: image size, channels, label column, splits, ...) and its loader.
`load_source(spec, options)` parses the spec once and calls the kind's loader. A source holds
its splits and the preprocessing that made them, which a run and its artifact carry, so the
runtime prepares inputs exactly as training did.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fewbit.data.dataset import ImageDataset, concat
from fewbit.data.registry import parse_spec, spec_kind
from fewbit.data.sinusoid import RegressionSource
from fewbit.errors import ConfigError, DataError
from fewbit.runtime.preprocess import ImagePreprocessing, TablePreprocessing

SPLITS = ("train", "val", "test", "all")
JOINED_SPLIT = "train+val"  # a final model's training classes once validation has chosen its recipe
# Ink data (Omniglot, glyphs): strokes are 1 on 0; a user's drawing is inverted when its paper is light.
INK_PREPROCESSING = {"channels": 1, "invert": "auto", "resize": "stretch", "resample": "lanczos"}


def ink_preprocessing(image_size: int) -> ImagePreprocessing:
    """How ink drawings (Omniglot, glyphs) become inputs: greyscale, inverted when the paper is light."""
    return ImagePreprocessing(image_size=image_size, **INK_PREPROCESSING)  # type: ignore[arg-type]


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
    summary = ("groups", "classes", "images", "channels", "image_size", "images_per_class_min")  # for data info

    def split(self, name: str) -> ImageDataset:
        """The split `name` (train, val, test, all, or train+val: the training and validation classes)."""
        if name == JOINED_SPLIT:
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
    splits: dict[str, Any]  # name -> TableDataset
    preprocessing: TablePreprocessing
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "table"
    summary = ("classes", "rows", "features", "images_per_class_min")  # for data info

    def split(self, name: str) -> Any:
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


Source = ImageSource | TableSource | RegressionSource
ClassDataset = Any  # ImageDataset | TableDataset | SeriesDataset: what episodes are drawn from


def load_source(spec: str, *, options: Any = None, progress: bool = True, **fields: Any) -> Any:
    """The data source named by `spec` (see `fewbit.data.registry.spec_help`), read per `options`
    (the kind's options dataclass; None: its defaults, with `fields` such as `image_size=84`).

        >>> source = load_source("folder:~/photos", image_size=84)
        >>> source.split("train").num_classes
    """
    parsed = parse_spec(spec)
    if options is None:
        options = data_options(spec, **fields)
    else:
        if not isinstance(options, parsed.source.options):
            raise ConfigError(f"data options: {parsed.token} reads with {parsed.source.options.__name__}, "
                              f"got {type(options).__name__}")
        if fields:
            options = dataclasses.replace(options, **fields)
    return parsed.source.load(parsed.arg, options, progress=progress)


def data_options(spec: str, **fields: Any) -> Any:
    """The options dataclass of the spec's kind with `fields` set (ConfigError naming a field the
    kind has not, e.g. image_size for a csv table)."""
    cls = parse_spec(spec).source.options
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: {parse_spec(spec).token} data has no option {', '.join(unknown)}; "
                          f"its options: {', '.join(sorted(names)) or 'none'}")
    return cls(**fields)


def load_split(spec: str, split: str, *, options: Any = None, **fields: Any) -> Any:
    """The split `split` of the source `spec`."""
    source = load_source(spec, options=options, **fields)
    if isinstance(source, RegressionSource):
        raise DataError(f"{spec} is a regression source; it has no splits")
    return source.split(split)


def source_kind(spec: str) -> str:
    """The kind of data a spec names (images, table, series, regression) without reading it."""
    return spec_kind(spec) or "images"
