"""Image folders for `fewbit adapt`: one folder per class, PNG/JPEG of any size, preprocessed
as the artifact says (greyscale, ink = 1, resize, normalise). Needs Pillow, not torch."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Images of a class-per-folder tree: `x [N, C, H, W]` float32, `labels [N]`, class names, files."""

    x: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    files: tuple[str, ...]


def preprocess(image: Any, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """A PIL image as float32 `[C, H, W]` by the artifact's preprocessing.

    Greyscale (transparent pixels count as white paper), ink = 1: with `invert` true the image is
    inverted; with "auto" it is inverted when its border is light (dark strokes on white paper,
    as Omniglot draws them), and kept when it is already light strokes on a dark ground.
    Then LANCZOS resize to `image_size` (the filter the training data used), scale to [0, 1],
    and `(x - mean) / std`.
    """
    from PIL import Image, ImageOps

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    grey = image.convert("L")
    invert = preprocessing.get("invert", "auto")
    if invert == "auto":
        a = np.asarray(grey, dtype=np.float32)
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        invert = bool(border.mean() > 127.5)
    if invert:
        grey = ImageOps.invert(grey)
    size = int(preprocessing["image_size"])
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.LANCZOS)
    x = np.asarray(grey, dtype=np.float32) / np.float32(255.0)
    mean = np.float32(preprocessing.get("mean", 0.0))
    std = np.float32(preprocessing.get("std", 1.0))
    channels = int(preprocessing.get("channels", 1))
    return np.repeat(((x - mean) / std)[None], channels, axis=0).astype(np.float32)


def load_image(path: Path, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """One image file preprocessed to `[C, H, W]`; DataError naming the file when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return preprocess(im, preprocessing)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read the image {path} ({reason}); replace or remove it") from None


def load_image_folder(
    root: str | Path, preprocessing: Mapping[str, Any], *, what: str = "images"
) -> ImageFolder:
    """Every class folder under `root` (sorted by name), each holding at least one PNG/JPEG."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{what} folder {root} has no class folders; put each class's images in its own folder"
        )
    xs, labels, files = [], [], []
    for label, d in enumerate(class_dirs):
        images = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"class folder {d} has no PNG or JPEG images")
        for p in images:
            xs.append(load_image(p, preprocessing))
            labels.append(label)
            files.append(str(p))
    return ImageFolder(
        np.stack(xs), np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs), tuple(files)
    )
