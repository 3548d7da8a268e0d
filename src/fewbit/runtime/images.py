"""Image folders for `fewbit adapt`: one folder per class, images of any size and format Pillow reads,
prepared as the artifact says (`fewbit.runtime.preprocess`). Needs Pillow, not torch.

A folder is listed first (`list_image_folder`, no pixel read) and decoded after (`load_images`),
so that a caller can check the size of the work, or decode a large query folder a batch at a
time, before holding any image. `is_skipped_entry` is the one rule, shared with `folder:` data
(`fewbit.data.folder`), for the entries every listing leaves out silently.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.errors import DataError, LimitError, shown
from fewbit.runtime.preprocess import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    ImagePreprocessing,
    read_input_file,
)

__all__ = [
    "IMAGE_SUFFIXES", "MAX_FOLDER_FILES", "FolderListing", "ImageFolder", "ImageSurvey", "fit_warnings",
    "is_skipped_entry", "list_image_folder", "list_images", "load_image", "load_image_folder", "load_images",
    "preprocess", "survey_images", "warn_if_unfit",
]

# Documented limit (docs/bad-input.md): files listed in one support or query folder of `fewbit adapt`
# (class folders and their files together), before any image is read.
MAX_FOLDER_FILES = 100_000
SKIPPED_NAMES = frozenset({"__MACOSX"})
# What `survey_images` reads to say whether a model can see a folder's images: at most this many
# files, spread over the folder, each decoded at most this many pixels a side (JPEG draft mode).
SURVEY_FILES, SURVEY_SIDE = 16, 64
# A pixel is coloured when its channels differ by more than this (of 255; JPEG noise on grey stays
# below it); an image is in colour when more than COLOUR_PIXELS of its pixels are.
COLOUR_CHROMA, COLOUR_PIXELS = 24, 0.05
# A size is far from the model's when the images' median shorter side is below 1/2 of its input
# (upsampled: detail it was trained to see is missing) or above SIZE_FACTOR times it (an 8x cut
# loses what a 32-pixel model of 200-pixel photos keeps).
SIZE_FACTOR = 8  # the folder of resource forks macOS puts in the zips it makes


def is_skipped_entry(name: str) -> bool:
    """Whether a folder entry is left out of a listing silently: hidden files and folders (`.x`,
    macOS `._x` resource forks) and `__MACOSX`. One rule for `fewbit adapt` and `folder:` data."""
    return name.startswith(".") or name in SKIPPED_NAMES


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Images of a class-per-folder tree: `x [N, C, H, W]` float32, `labels [N]`, class names, files."""

    x: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """The image files of a class-per-folder tree, not yet read: files, `labels [N]`, class names."""

    files: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]


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


def load_images(files: Sequence[str | Path], preprocessing: Mapping[str, Any] | ImagePreprocessing) -> np.ndarray:
    """Image files preprocessed to float32 `[N, C, H, W]`, in order (N >= 1)."""
    rule = _rule(preprocessing)
    return np.stack([load_image(Path(p), rule) for p in files])


def list_images(folder: Path, limit: int | None = None,
                suffixes: Sequence[str] = IMAGE_SUFFIXES) -> tuple[list[Path], list[str]]:
    """(sample files: images, or files ending in `suffixes`; names of other entries that are not
    folders) directly in `folder`, sorted; skipped entries (`is_skipped_entry`) are left out.
    LimitError beyond `limit` entries (default MAX_FOLDER_FILES)."""
    limit = MAX_FOLDER_FILES if limit is None else limit
    images, others = [], []
    with os.scandir(folder) as entries:
        for count, entry in enumerate(entries, 1):
            if count > limit:
                raise LimitError(f"folder {shown(folder)} holds more than {limit:,} files, the limit of a "
                                 "folder fewbit adapt reads; split it")
            if is_skipped_entry(entry.name):
                continue
            p = Path(entry.path)
            if p.is_file() and p.suffix.lower() in suffixes:
                images.append(p)
            elif not p.is_dir():
                others.append(p.name)
    return sorted(images), sorted(others)


def list_image_folder(root: str | Path, *, what: str = "images", limit: int | None = None,
                      suffixes: Sequence[str] = IMAGE_SUFFIXES) -> FolderListing:
    """Every class folder under `root` (sorted by name), each holding at least one sample (an image,
    or a file ending in `suffixes`), listed without reading one; LimitError when the tree holds
    more than `limit` files (default MAX_FOLDER_FILES).

    Files beside the class folders and non-image files inside them are skipped with a warning
    that names them; skipped entries (`is_skipped_entry`) are left out silently.
    """
    limit = MAX_FOLDER_FILES if limit is None else limit
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder {root} does not exist")
    loose_images, loose_other = list_images(root, limit, suffixes)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_skipped_entry(p.name))
    if not class_dirs:
        raise DataError(
            f"{what} folder {root} has no class folders; put each class's images in its own folder"
        )
    skipped = [f"{root.name}/{p.name}" for p in loose_images] + [f"{root.name}/{n}" for n in loose_other]
    labels: list[int] = []
    files: list[str] = []
    listed = len(class_dirs) + len(loose_images) + len(loose_other)
    for label, d in enumerate(class_dirs):
        images, others = list_images(d, limit, suffixes)
        listed += len(images) + len(others)
        if listed > limit:
            raise LimitError(f"{what} folder {shown(root)} holds more than {limit:,} files, the limit of a folder "
                             "fewbit adapt reads; split it")
        skipped += [f"{d.name}/{n}" for n in others]
        if not images:
            noun = "images" if suffixes == IMAGE_SUFFIXES else "samples"
            raise DataError(f"class folder {d} has no {noun} ({', '.join(suffixes)})")
        files += [str(p) for p in images]
        labels += [label] * len(images)
    if skipped:
        listed_names = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        warnings.warn(f"{what} folder {root}: skipped {len(skipped)} file(s) that are not class images: "
                      f"{listed_names}", stacklevel=2)
    return FolderListing(tuple(files), np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs))


def load_image_folder(
    root: str | Path, preprocessing: Mapping[str, Any] | ImagePreprocessing, *, what: str = "images"
) -> ImageFolder:
    """Every class folder under `root` (sorted by name), each holding at least one image, read
    and preprocessed (`list_image_folder`, then `load_images`).

    Files beside the class folders and non-image files inside them are skipped with a warning
    that names them; skipped entries (`is_skipped_entry`) are left out silently.
    """
    rule = _rule(preprocessing)
    listing = list_image_folder(root, what=what)
    return ImageFolder(load_images(listing.files, rule), listing.labels, listing.classes, listing.files)


@dataclasses.dataclass(frozen=True)
class ImageSurvey:
    """What a sample of image files looks like: `sampled` files read, `colour` of them in colour,
    the median of their shorter sides in pixels (0 when none could be read)."""

    sampled: int
    colour: int
    median_side: float


def _is_colour(image: Any) -> bool:
    """Whether a PIL image holds colour: more than COLOUR_PIXELS of its pixels with channels apart."""
    if image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;16"):
        return False
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)  # [H, W, 3]
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return bool((chroma > COLOUR_CHROMA).mean() > COLOUR_PIXELS)


def survey_images(files: Sequence[str | Path], sample: int = SURVEY_FILES) -> ImageSurvey:
    """Read up to `sample` of `files` (spread evenly over the list) small, to say whether they are in
    colour and how large they are. Files that cannot be read are left out (reading them for the
    model reports them)."""
    from PIL import Image

    picked = [files[i] for i in sorted({int(k * len(files) / sample) for k in range(sample)})] \
        if len(files) > sample else list(files)
    colour, sides = 0, []
    for path in picked:
        try:
            data = read_input_file(path, MAX_IMAGE_FILE_BYTES)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as im:
                    width, height = im.size
                    if not 0 < width * height <= MAX_IMAGE_PIXELS:
                        continue
                    if im.format == "JPEG":
                        im.draft(im.mode if im.mode in ("L", "RGB") else None, (SURVEY_SIDE, SURVEY_SIDE))
                    im.thumbnail((SURVEY_SIDE, SURVEY_SIDE))
                    colour += _is_colour(im)
                    sides.append(min(width, height))
        except (DataError, OSError, ValueError, SyntaxError, EOFError, MemoryError):
            continue
    return ImageSurvey(len(sides), colour, float(np.median(sides)) if sides else 0.0)


def fit_warnings(files: Sequence[str | Path], preprocessing: Mapping[str, Any] | ImagePreprocessing, *,
                 model: str = "this model", data: str | None = None, what: str = "images") -> list[str]:
    """One line per way a model prepared by `preprocessing` cannot see these image files as it was
    trained to: colour images for a greyscale model (it sees them as grey), greyscale images for a
    colour one, or a size far from its input (see SIZE_FACTOR). `data` names what it was trained on."""
    rule = _rule(preprocessing)
    survey = survey_images(files)
    if not survey.sampled:
        return []
    trained = f"{model} was trained on {rule.image_size}x{rule.image_size} "
    trained += "greyscale" if rule.channels == 1 else "colour"
    trained += f" images ({data})" if data else " images"
    out = []
    if rule.channels == 1 and survey.colour * 2 > survey.sampled:
        out.append(f"{trained}, but {survey.colour} of {survey.sampled} {what} sampled are in colour, which it "
                   "sees as grey: classes told apart by colour will look alike; train a model on your images "
                   "(fewbit train --dataset folder:DIR)")
    elif rule.channels == 3 and survey.colour == 0:
        out.append(f"{trained}, but the {survey.sampled} {what} sampled are greyscale: it sees them as grey "
                   "colour images, unlike anything it learned from")
    side, size = survey.median_side, rule.image_size
    if side < size / 2 or side > SIZE_FACTOR * size:
        out.append(f"{trained}, but the {what} sampled are {side:.0f} pixels on their shorter side (median), "
                   f"{side / size:.1f}x its input: "
                   + ("detail it learned to see is missing" if side < size else "it sees them much reduced"))
    return out


def warn_if_unfit(files: Sequence[str | Path], preprocessing: Mapping[str, Any] | ImagePreprocessing, *,
                  model: str = "this model", data: str | None = None, what: str = "images") -> list[str]:
    """`warnings.warn` each line of `fit_warnings`, and return them."""
    lines = fit_warnings(files, preprocessing, model=model, data=data, what=what)
    for line in lines:
        warnings.warn(line, stacklevel=2)
    return lines
