"""The one decoding rule shared by training data and the runtime: resize, crop, channels, limits, files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewbit.errors import DataError
from fewbit.runtime.preprocess import (
    MAX_IMAGE_FILE_BYTES,
    ImagePreprocessing,
    TablePreprocessing,
    preprocessing_from_dict,
    read_input_file,
)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_crop_keeps_the_centre_and_stretch_squeezes() -> None:
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = (255, 0, 0)  # a red centre third, black sides
    data = _png(Image.fromarray(wide))
    crop = ImagePreprocessing(image_size=20, channels=3, resize="crop").decode_bytes(data, "wide")
    stretch = ImagePreprocessing(image_size=20, channels=3, resize="stretch").decode_bytes(data, "wide")
    assert crop.shape == stretch.shape == (3, 20, 20)
    assert crop[0].mean() > 250  # the centre square is all red
    assert 60 < stretch[0].mean() < 110  # the whole width squeezed: a third red


def test_pad_keeps_an_off_centre_object_whole_and_unsqueezed() -> None:
    """A 60x20 photo with its object at the right end: crop cuts it off, pad keeps all of it, its
    shape kept (20x20 object -> about 7x7), on the border's mean colour."""
    wide = np.full((20, 60, 3), (0, 0, 200), np.uint8)  # blue ground
    wide[:, 40:] = (255, 0, 0)  # the object: a red square at the right end
    data = _png(Image.fromarray(wide))
    crop = ImagePreprocessing(image_size=21, channels=3, resize="crop").decode_bytes(data, "wide")
    pad = ImagePreprocessing(image_size=21, channels=3, resize="pad").decode_bytes(data, "wide")
    assert pad.shape == crop.shape == (3, 21, 21)
    assert crop[0].max() < 10  # the centre square holds none of the object
    red = (pad[0] > 200) & (pad[2] < 50)
    assert 40 <= red.sum() <= 60  # the whole 20x20 object at a third of the scale: about 7x7 pixels
    rows, cols = np.nonzero(red)
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 1  # still square
    assert tuple(pad[:, 0, 0]) == tuple(pad[:, -1, -1])  # the letterbox: one fill colour
    square = _png(Image.fromarray(np.full((30, 30, 3), 90, np.uint8)))
    assert ImagePreprocessing(image_size=10, channels=3, resize="pad").decode_bytes(square, "sq").std() == 0
    grey = ImagePreprocessing(image_size=21, channels=1, resize="pad").decode_bytes(data, "wide")
    assert grey.shape == (1, 21, 21)


def test_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="preprocessing.std"):
        ImagePreprocessing(channels=3, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="preprocessing.mean"):
        ImagePreprocessing(channels=3, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="preprocessing.channels"):
        ImagePreprocessing(channels=2)
    with pytest.raises(ValueError, match="preprocessing.std"):
        preprocessing_from_dict({"image_size": 28, "std": float("nan")})
    with pytest.raises(ValueError, match="kind"):
        preprocessing_from_dict({"kind": "audio"})
    with pytest.raises(ValueError, match="features"):
        TablePreprocessing(features=(), mean=(), std=(), label_column="y")


def test_round_trip_and_format_one_defaults() -> None:
    rule = ImagePreprocessing(image_size=84, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.3), resize="crop")
    assert preprocessing_from_dict(rule.to_dict()) == rule
    old = preprocessing_from_dict({"image_size": 28, "channels": 1, "invert": "auto", "mean": 0.0, "std": 1.0})
    assert old.resize == "stretch" and old.resample == "lanczos"  # what format-1 artifacts meant


def test_a_huge_canvas_is_refused_before_decoding() -> None:
    data = _png(Image.new("1", (13000, 13000)))  # a few KB on disk, 169 megapixels
    assert len(data) < 100_000
    with pytest.raises(DataError, match="13000x13000 pixels"):
        ImagePreprocessing().decode_bytes(data, "bomb.png")


def test_large_jpegs_decode_in_draft_mode() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=70)
    rule = ImagePreprocessing(image_size=28, channels=3)
    sizes = []
    out = rule.decode_with(lambda im: sizes.append(im.size) or rule.decode(im), buf.getvalue(), "photo.jpg")
    assert out.shape == (3, 28, 28) and max(sizes[0]) <= 1000  # DCT-scaled by 1/4 or more before resampling


def test_only_regular_files_of_bounded_size_are_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DataError, match="not a regular file"):
        read_input_file(tmp_path / "pipe", 100)  # returns at once: a FIFO is never opened blocking
    with pytest.raises(DataError, match="not a regular file"):
        read_input_file("/dev/zero", 100)
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(DataError, match="101 bytes"):
        read_input_file(tmp_path / "big", 100)
    with pytest.raises(DataError, match="cannot read"):
        read_input_file(tmp_path / "missing", 100)
    assert MAX_IMAGE_FILE_BYTES >= 16 << 20


def test_transparency_greyscale_and_palette_modes() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red: white paper
    assert ImagePreprocessing(image_size=10, channels=3).decode(rgba).min() == 255
    la = Image.new("LA", (10, 10), (0, 255))
    assert ImagePreprocessing(image_size=10, channels=1).decode(la).max() == 0
    p = Image.new("RGB", (10, 10), (0, 0, 255)).convert("P")
    blue = ImagePreprocessing(image_size=10, channels=3).decode(p)
    assert blue[2].min() > 200 and blue[0].max() < 50
