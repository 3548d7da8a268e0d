"""Image folders for `fewbit adapt`: one folder per class, images of any size and format Pillow reads,
prepared as the artifact says (`fewbit.runtime.preprocess`). Needs Pillow, not torch."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.errors import DataError
from fewbit.runtime.preprocess import IMAGE_SUFFIXES, ImagePreprocessing, is_image_name

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "list_images", "load_image", "load_image_folder", "preprocess"]


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Images of a class-per-folder tree: `x [N, C, H, W]` float32, `labels [N]`, class names, files."""

    x: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    files: tuple[str, ...]


def _rule(preprocessing: Mapping[str, Any] | ImagePreprocessing) -> ImagePreprocessing:
    if isinstance(preprocessing, ImagePreprocessing):
        return preprocessing
    try:
        return ImagePreprocessing.from_dict(preprocessing)
    except ValueError as exc:
        raise DataError(f"invalid preprocessing: {exc}") from None


def preprocess(image: Any, preprocessing: Mapping[str, Any] | ImagePreprocessing) -> np.ndarray:
    """A PIL image as float32 `[C, H, W]` by the artifact's preprocessing (see `ImagePreprocessing`)."""
    rule = _rule(preprocessing)
    return rule.normalize(rule.decode(image)[None])[0]


def load_image(path: Path, preprocessing: Mapping[str, Any] | ImagePreprocessing) -> np.ndarray:
    """One image file preprocessed to `[C, H, W]`; DataError naming the file when it cannot be read."""
    try:
        return _rule(preprocessing).load(path)
    except DataError as exc:
        raise DataError(f"{exc}; replace or remove it") from None


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """(image files, names of other visible files) directly in `folder`; hidden files are left out."""
    images, others = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue  # hidden files and macOS `._x` resource forks
        if p.is_file() and is_image_name(p.name):
            images.append(p)
        elif not p.is_dir():
            others.append(p.name)
    return images, others


def load_image_folder(
    root: str | Path, preprocessing: Mapping[str, Any] | ImagePreprocessing, *, what: str = "images"
) -> ImageFolder:
    """Every class folder under `root` (sorted by name), each holding at least one image.

    Files beside the class folders and non-image files inside them are skipped with a warning
    that names them; hidden files are skipped silently.
    """
    rule = _rule(preprocessing)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{what} folder {root} has no class folders; put each class's images in its own folder"
        )
    loose_images, loose_other = list_images(root)
    skipped = [f"{root.name}/{p.name}" for p in loose_images] + [f"{root.name}/{n}" for n in loose_other]
    xs, labels, files = [], [], []
    for label, d in enumerate(class_dirs):
        images, others = list_images(d)
        skipped += [f"{d.name}/{n}" for n in others]
        if not images:
            raise DataError(f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for p in images:
            xs.append(load_image(p, rule))
            labels.append(label)
            files.append(str(p))
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        warnings.warn(f"{what} folder {root}: skipped {len(skipped)} file(s) that are not class images: {shown}",
                      stacklevel=2)
    return ImageFolder(
        np.stack(xs), np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs), tuple(files)
    )
