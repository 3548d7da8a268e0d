"""Data sources named by one spec string: `glyphs`, `sinusoid`, `omniglot:PATH`, `omniglot-minimal:DIR`."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

from fewbit.data.dataset import ImageDataset
from fewbit.errors import DataError

SPLITS = ("train", "val", "test", "all")
SPEC_HELP = "glyphs | sinusoid | omniglot:PATH | omniglot-minimal:DIR"

# Omniglot minimal protocol: meta-test on the small2 alphabets that small1 lacks.
MINIMAL_SMALL1 = "images_background_small1.zip"
MINIMAL_SMALL2 = "images_background_small2.zip"
MINIMAL_VAL_EVERY = 5  # every 5th character of each small1 alphabet is held out for validation


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSource:
    """An image data source with named splits (alphabet-disjoint unless stated)."""

    spec: str
    splits: dict[str, ImageDataset]
    kind: str = "images"

    def split(self, name: str) -> ImageDataset:
        """The split `name` (train, val, test or all)."""
        if name not in self.splits:
            raise DataError(f"{self.spec}: no split {name!r}; choose one of {', '.join(self.splits)}")
        return self.splits[name]

    def info(self, split: str = "all") -> dict[str, object]:
        """Counts of `split`, plus the class count of every split."""
        out = dict(self.split(split).info())
        out["spec"] = self.spec
        out["kind"] = self.kind
        out["split"] = split
        out["splits"] = {name: ds.num_classes for name, ds in self.splits.items()}
        return out


@dataclasses.dataclass(frozen=True)
class RegressionSource:
    """A regression task family (sinusoid)."""

    spec: str
    kind: str = "regression"

    def info(self, split: str = "all") -> dict[str, object]:
        from fewbit.data.sinusoid import SinusoidSampler

        return {"spec": self.spec, **SinusoidSampler.info()}


Source = ImageSource | RegressionSource


def split_by_alphabet(
    ds: ImageDataset, fractions: tuple[float, float] = (0.6, 0.2), seed: int = 0
) -> dict[str, ImageDataset]:
    """Alphabet-disjoint train/val/test splits: a seeded shuffle of the sorted alphabets, cut by fraction."""
    alphabets = sorted(ds.alphabets)
    if len(alphabets) < 3:
        raise DataError(f"{ds.name}: {len(alphabets)} alphabet(s) cannot make alphabet-disjoint train/val/test splits")
    random.Random(seed).shuffle(alphabets)
    n = len(alphabets)
    n_train = max(1, round(n * fractions[0]))
    n_val = max(1, round(n * fractions[1]))
    n_train = min(n_train, n - 2)
    n_val = min(n_val, n - n_train - 1)
    parts = {
        "train": alphabets[:n_train],
        "val": alphabets[n_train : n_train + n_val],
        "test": alphabets[n_train + n_val :],
    }
    out = {name: ds.subset_alphabets(sorted(a), f"{ds.name}[{name}]") for name, a in parts.items()}
    out["all"] = ds
    return out


def _glyphs(arg: str, image_size: int) -> ImageSource:
    from fewbit.data.glyphs import load_glyphs

    if arg:
        raise DataError(f"glyphs takes no argument, got 'glyphs:{arg}'")
    ds = load_glyphs(image_size=image_size)
    return ImageSource("glyphs", split_by_alphabet(ds))


def _omniglot(arg: str, image_size: int) -> ImageSource:
    from fewbit.data.omniglot import load_omniglot

    if not arg:
        raise DataError("omniglot needs a path: omniglot:PATH (a background zip or its extracted folder)")
    ds = load_omniglot(Path(arg).expanduser(), image_size=image_size)
    return ImageSource(f"omniglot:{arg}", split_by_alphabet(ds))


def _omniglot_minimal(arg: str, image_size: int) -> ImageSource:
    from fewbit.data.omniglot import load_omniglot

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
    small1 = load_omniglot(paths[0], image_size=image_size)
    small2 = load_omniglot(paths[1], image_size=image_size)
    test_alphabets = [a for a in small2.alphabets if a not in set(small1.alphabets)]
    val_ids = [i for i, c in enumerate(small1.classes) if _char_number(c) % MINIMAL_VAL_EVERY == 0]
    train_ids = [i for i in range(small1.num_classes) if i not in set(val_ids)]
    splits = {
        "train": small1.subset_classes(train_ids, "omniglot-minimal[train]"),
        "val": small1.subset_classes(val_ids, "omniglot-minimal[val]"),
        "test": small2.subset_alphabets(test_alphabets, "omniglot-minimal[test]"),
    }
    splits["all"] = small1
    return ImageSource(f"omniglot-minimal:{arg}", splits)


def _char_number(class_name: str) -> int:
    digits = "".join(ch for ch in class_name.rsplit("/", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


_IMAGE_SOURCES: dict[str, Callable[[str, int], ImageSource]] = {
    "glyphs": _glyphs,
    "omniglot": _omniglot,
    "omniglot-minimal": _omniglot_minimal,
}


def load_source(spec: str, *, image_size: int = 28) -> Source:
    """The data source named by `spec` (see SPEC_HELP)."""
    if not isinstance(spec, str) or not spec:
        raise DataError(f"empty data spec; use one of: {SPEC_HELP}")
    kind, _, arg = spec.partition(":")
    if kind == "sinusoid":
        if arg:
            raise DataError(f"sinusoid takes no argument, got {spec!r}")
        return RegressionSource("sinusoid")
    if kind not in _IMAGE_SOURCES:
        raise DataError(f"unknown data source {kind!r}; use one of: {SPEC_HELP}")
    if image_size < 8 or image_size > 256:
        raise DataError(f"image size {image_size} is out of range; use 8..256")
    return _IMAGE_SOURCES[kind](arg, image_size)


def load_split(spec: str, split: str, *, image_size: int = 28) -> ImageDataset:
    """The image split `split` of the source `spec`."""
    source = load_source(spec, image_size=image_size)
    if not isinstance(source, ImageSource):
        raise DataError(f"{spec} is a regression source; it has no image splits")
    return source.split(split)
