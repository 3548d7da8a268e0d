"""How raw inputs become model inputs: the same code at training time, in `fewbit adapt` and in the runtime.

An artifact records its preprocessing (`ImagePreprocessing` or `TablePreprocessing`, as a dict in
its manifest); training data are decoded by these same functions, so the pixels a model learns
from are, bit for bit, the pixels it sees on the device. Numpy and Pillow only (no torch).

Reading is bounded before anything is allocated: only regular files are read (a FIFO, a device or
a link to one is refused without being opened for reading), an image file may hold at most
`MAX_IMAGE_FILE_BYTES`, and an image may claim at most `MAX_IMAGE_PIXELS` once JPEG's draft mode has
reduced it, so a small file that claims a huge canvas is refused instead of decoded.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fewbit._io import read_regular_file
from fewbit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
MAX_IMAGE_FILE_BYTES = 64 << 20  # one image file; a few-shot image is decoded to a few dozen pixels a side
MAX_IMAGE_PIXELS = 40_000_000  # a 12-megapixel phone photo is fine, a 13000x13000 canvas is not
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 512  # what training data may be resized to (artifacts: 1..MAX)
MAX_TABLE_FEATURES = 65_536
# crop: shorter side to size, then the centre; stretch: both sides to size; pad: the longer side to
# size, the rest filled with the mean colour of the image's border (letterbox: nothing cut, no distortion)
RESIZE_RULES = ("crop", "stretch", "pad")
RESAMPLE = ("lanczos", "bilinear", "bicubic", "nearest")
DRAFT_FACTOR = 2  # JPEGs are DCT-decoded at >= 2x the target size, then resampled (fast on large photos)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "La")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, MemoryError)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _floats(value: Any, field: str, owner: str) -> tuple[float, ...]:
    seq = [value] if _is_number(value) else value
    if not isinstance(seq, (list, tuple)) or not seq or not all(_is_number(v) for v in seq):
        raise ValueError(f"{owner}.{field}: must be a finite number or a list of them, got {value!r}")
    return tuple(float(v) for v in seq)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImagePreprocessing:
    """Image file -> float32 `[channels, image_size, image_size]`.

    Steps: transparent pixels are composited on white paper; the image becomes greyscale
    (`channels=1`, ITU-R 601 luma; 16-bit greyscale is scaled, not clipped) or RGB (`channels=3`);
    `invert` (True, False, or "auto": invert when the border is light, for dark strokes on paper)
    flips it; `resize` scales it to `image_size` with the `resample` filter ("crop": the shorter
    side to `image_size`, then the centre square; "stretch": both sides; "pad": the longer side,
    the rest filled with the mean colour of the image's border, so nothing is cut off or distorted);
    values are scaled to [0, 1] and normalised per channel, `(x - mean[c]) / std[c]`.
    """

    image_size: int = 28
    channels: int = 1
    invert: bool | str = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    resample: str = "lanczos"

    kind = "image"

    def __post_init__(self) -> None:
        owner = "preprocessing"
        size = self.image_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
            raise ValueError(f"{owner}.image_size: must be a whole number 1..{MAX_IMAGE_SIZE}, got {size!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"{owner}.channels: must be 1 (greyscale) or 3 (RGB), got {self.channels!r}")
        if self.invert not in (True, False, "auto"):
            raise ValueError(f"{owner}.invert: must be true, false or auto, got {self.invert!r}")
        for field in ("mean", "std"):
            values = _floats(getattr(self, field), field, owner)
            if len(values) == 1:
                values = values * self.channels
            if len(values) != self.channels:
                raise ValueError(f"{owner}.{field}: needs 1 or {self.channels} values, got {len(values)}")
            object.__setattr__(self, field, values)
        if not all(s > 0 for s in self.std):
            raise ValueError(f"{owner}.std: every value must be > 0, got {list(self.std)}")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"{owner}.resize: must be one of {', '.join(RESIZE_RULES)}, got {self.resize!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"{owner}.resample: must be one of {', '.join(RESAMPLE)}, got {self.resample!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`(channels, image_size, image_size)`."""
        return self.channels, self.image_size, self.image_size

    @property
    def normalizes(self) -> bool:
        """Whether normalisation changes anything (mean 0, std 1 leaves [0, 1] values as they are)."""
        return any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form (JSON-ready)."""
        return {"kind": self.kind, "image_size": self.image_size, "channels": self.channels,
                "invert": self.invert, "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize, "resample": self.resample}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePreprocessing:
        """From a manifest's `preprocessing` block; missing keys take the defaults of format 1
        (stretch, lanczos), unknown keys are ignored. ValueError naming the field when invalid."""
        if not isinstance(data, Mapping):
            raise ValueError(f"preprocessing: must be a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields})

    def replace(self, **changes: Any) -> ImagePreprocessing:
        """A copy with `changes`, validated again (a uniform mean/std follows a change of channels)."""
        if changes.get("channels", self.channels) != self.channels:
            for field in ("mean", "std"):
                values = getattr(self, field)
                if field not in changes and len(set(values)) == 1:
                    changes[field] = values[:1]
        return dataclasses.replace(self, **changes)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, image: Any) -> np.ndarray:
        """uint8 `[channels, image_size, image_size]` of a PIL image (before scaling and normalisation)."""
        from PIL import Image, ImageOps

        image = _to_eight_bit(image)
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(paper, rgba)
        image = image.convert("L" if self.channels == 1 else "RGB")
        invert = self.invert
        if invert == "auto":
            a = np.asarray(image, dtype=np.float32)
            border = np.concatenate([a[0].reshape(-1), a[-1].reshape(-1), a[:, 0].reshape(-1), a[:, -1].reshape(-1)])
            invert = bool(border.mean() > 127.5)
        if invert:
            image = ImageOps.invert(image)
        image = _resize(image, self.image_size, self.resize, self.resample)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def decode_bytes(self, data: bytes, where: str) -> np.ndarray:
        """`decode` of an image file's bytes; DataError naming `where` when they are not a usable image."""
        return self.decode_with(lambda im: self.decode(im), data, where)

    def decode_with(self, fn: Any, data: bytes, where: str) -> Any:
        """`fn(image)` of the image in `data`, opened with the size checks and JPEG draft mode."""
        from PIL import Image

        try:
            with warnings.catch_warnings():  # fewbit's own pixel limit (below Pillow's) decides
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
            with im:
                _check_pixels(im, where, self.image_size)
                return fn(im)
        except DataError:
            raise
        except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read the image {where} (cannot decode it: {_one_line(exc)})") from None

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """float32 `[channels, image_size, image_size]` of an image file, scaled and normalised."""
        return self.normalize(self.decode_bytes(read_input_file(path, MAX_IMAGE_FILE_BYTES), str(path))[None])[0]

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 `[N, C, H, W]` -> float32 `[N, C, H, W]` in [0, 1], then `(x - mean) / std` per channel."""
        x = pixels.astype(np.float32) / np.float32(255.0)
        if self.normalizes:
            mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
            x = (x - mean) / std
        return x


@dataclasses.dataclass(frozen=True, kw_only=True)
class TablePreprocessing:
    """A CSV row -> float32 `[features]`: the named numeric columns, standardised with training statistics."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_column: str

    kind = "table"

    def __post_init__(self) -> None:
        owner = "preprocessing"
        if not isinstance(self.features, tuple) or not self.features or not all(
            isinstance(f, str) for f in self.features
        ):
            raise ValueError(f"{owner}.features: must be a non-empty list of column names")
        if len(self.features) > MAX_TABLE_FEATURES:
            raise ValueError(f"{owner}.features: {len(self.features)} columns, more than {MAX_TABLE_FEATURES}")
        for field in ("mean", "std"):
            values = _floats(getattr(self, field), field, owner)
            if len(values) != len(self.features):
                raise ValueError(f"{owner}.{field}: needs {len(self.features)} values, got {len(values)}")
            object.__setattr__(self, field, values)
        if not all(s > 0 for s in self.std):
            raise ValueError(f"{owner}.std: every value must be > 0")
        if not isinstance(self.label_column, str) or not self.label_column:
            raise ValueError(f"{owner}.label_column: must be a column name, got {self.label_column!r}")

    @property
    def input_shape(self) -> tuple[int]:
        return (len(self.features),)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": list(self.features), "mean": list(self.mean),
                "std": list(self.std), "label_column": self.label_column}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TablePreprocessing:
        if not isinstance(data, Mapping):
            raise ValueError(f"preprocessing: must be a mapping, got {type(data).__name__}")
        try:
            return cls(features=tuple(data["features"]), mean=tuple(data["mean"]), std=tuple(data["std"]),
                       label_column=data["label_column"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"preprocessing: a table needs features, mean, std and label_column ({exc})") from None

    def standardize(self, values: np.ndarray) -> np.ndarray:
        """float `[N, F]` raw values -> float32 standardised features."""
        return standardize_rows(values, self.mean, self.std)


def standardize_rows(values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 `[N, F]` features `(values - mean) / std` of raw `values` (first rounded to float32, as tables
    are stored), the same at training time and in the runtime.

    Worked in float64: a column whose values span float32's range would overflow a float32 difference.
    """
    x = np.asarray(values, np.float32).astype(np.float64)
    return ((x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)).astype(np.float32)


Preprocessing = ImagePreprocessing | TablePreprocessing


# The kinds of preprocessing an artifact may record, by their `kind`; another module registers its
# own with `register_preprocessing` (fewbit.runtime.series: "series"; the runtime package imports it).
PREPROCESSING_KINDS: dict[str, Any] = {"image": ImagePreprocessing, "table": TablePreprocessing}


def register_preprocessing(cls: type) -> type:
    """Class decorator: make `cls` (with `kind`, `input_shape`, `to_dict`, `from_dict`) readable
    from a manifest's `preprocessing` block of that kind."""
    PREPROCESSING_KINDS[cls.kind] = cls  # type: ignore[attr-defined]
    return cls


def preprocessing_from_dict(data: Mapping[str, Any]) -> Preprocessing:
    """The preprocessing a manifest (or a run) records; ValueError naming the field when invalid."""
    if not isinstance(data, Mapping):
        raise ValueError(f"preprocessing: must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", "image")
    if kind not in PREPROCESSING_KINDS:
        raise ValueError(f"preprocessing.kind: must be one of {', '.join(PREPROCESSING_KINDS)}, got {kind!r}")
    return PREPROCESSING_KINDS[kind].from_dict(data)


# ------------------------------------------------------------------------------------- reading files


def read_input_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of an input file (an image, a table, a series) read by `fewbit._io.read_regular_file`:
    a regular file of at most `max_bytes`, opened without blocking; DataError naming it otherwise."""
    try:
        return read_regular_file(path, max_bytes, "input file")
    except ValueError as exc:  # a FIFO, device or socket, or a file over the limit
        raise DataError(f"{exc}; remove it from the data") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc})") from None

def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix and is not hidden (`.x`, macOS `._x` resource forks)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


# ------------------------------------------------------------------------------------------- helpers


def _check_pixels(im: Any, where: str, image_size: int) -> None:
    """Refuse canvases too large to decode; shrink JPEGs in the decoder (draft mode) first."""
    if getattr(im, "format", None) == "JPEG":
        target = DRAFT_FACTOR * image_size
        im.draft(im.mode if im.mode in ("L", "RGB") else None, (target, target))
    width, height = im.size
    if width < 1 or height < 1:
        raise DataError(f"the image {where} is empty ({width}x{height} pixels)")
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"the image {where} is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} fewbit decodes; "
            f"shrink it (it is resized to {image_size}x{image_size} anyway)"
        )


def _to_eight_bit(image: Any) -> Any:
    """16-bit and 32-bit greyscale scaled to 8 bits (Pillow's convert("L") would clip them)."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), mode="L")
    if mode == "F":
        a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0  # float images come as [0, 1] or [0, 255]
        return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    return image


def _resize(image: Any, size: int, rule: str, resample: str) -> Any:
    from PIL import Image

    if image.size == (size, size):
        return image
    flt = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}[resample]
    if rule == "stretch":
        return image.resize((size, size), flt)
    width, height = image.size
    if rule == "pad":
        scale = size / max(width, height)
        new = (max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale))))
        small = image.resize(new, flt)
        a = np.asarray(small, dtype=np.float64).reshape(new[1], new[0], -1)
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # [pixels, channels]
        fill = tuple(int(v) for v in np.rint(border.mean(axis=0)))
        canvas = Image.new(small.mode, (size, size), fill[0] if len(fill) == 1 else fill)
        canvas.paste(small, ((size - new[0]) // 2, (size - new[1]) // 2))
        return canvas
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.resize(new, flt).crop((left, top, left + size, top + size))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def decode_into(
    out: np.ndarray, start: int, paths: Sequence[str], rule: Mapping[str, Any], max_bytes: int = MAX_IMAGE_FILE_BYTES
) -> tuple[list[str | None], np.ndarray]:
    """Decode image files into rows `start..` of `out` (uint8 `[N, C, S, S]`).

    Returns (an error message or None per file, per-file per-channel `[sum, sum of squares]` of the
    [0, 1] values `[len(paths), C, 2]` float64). A file that cannot be used leaves its row zero.
    """
    pre = ImagePreprocessing.from_dict(rule)
    errors: list[str | None] = []
    sums = np.zeros((len(paths), pre.channels, 2), np.float64)
    for i, path in enumerate(paths):
        try:
            pixels = pre.decode_bytes(read_input_file(path, max_bytes), path)
        except DataError as exc:
            errors.append(str(exc))
            continue
        out[start + i] = pixels
        x = pixels.reshape(pre.channels, -1).astype(np.float64) / 255.0
        sums[i, :, 0] = x.sum(axis=1)
        sums[i, :, 1] = np.square(x).sum(axis=1)
        errors.append(None)
    return errors, sums


def decode_file_rows(
    npy_path: str, start: int, paths: Sequence[str], rule: Mapping[str, Any]
) -> tuple[list[str | None], np.ndarray]:
    """`decode_into` rows of the `.npy` file at `npy_path` (opened as a writable memory map); for worker processes."""
    out = np.load(npy_path, mmap_mode="r+")
    try:
        return decode_into(out, start, paths, rule)
    finally:
        out.flush()
        del out


def image_is_colour(path: str, max_bytes: int = MAX_IMAGE_FILE_BYTES) -> bool | str:
    """True when the image file holds colour, False for greyscale; an error message when unreadable.

    Reads the header (and a palette's entries) only, except for RGB files, whose pixels are
    checked for R = G = B (greyscale saved as RGB is greyscale).
    """
    from PIL import Image

    try:
        data = read_input_file(path, max_bytes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            _check_pixels(im, path, 64)
            if im.mode in _GREY_MODES:
                return False
            if im.mode == "P" or im.mode in ("RGB", "RGBA", "RGBX"):
                palette = np.asarray(im.convert("RGB"))
            else:
                return True
            return bool(np.any(palette[..., 0] != palette[..., 1]) or np.any(palette[..., 1] != palette[..., 2]))
    except DataError as exc:
        return str(exc)
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as exc:
        return f"cannot read the image {path} (cannot decode it: {_one_line(exc)})"


def colour_flags(paths: Sequence[str]) -> list[bool | str]:
    """`image_is_colour` of each path (for worker processes)."""
    return [image_is_colour(p) for p in paths]
