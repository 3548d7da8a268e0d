"""Preprocessing of user images: greyscale, ink = 1 whatever the paper, resize, normalise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fewbit.errors import DataError
from fewbit.runtime.images import load_image_folder, preprocess

PRE = {"image_size": 28, "channels": 1, "invert": "auto", "mean": 0.0, "std": 1.0}


def _stroke(paper: int, ink: int, size: int = 90, mode: str = "L") -> Image.Image:
    im = Image.new(mode, (size, size), paper if mode == "L" else (paper,) * (len(mode)))
    ImageDraw.Draw(im).line([(10, 45), (80, 45)], fill=ink if mode == "L" else (ink,) * len(mode), width=9)
    return im


def test_dark_ink_on_white_paper_and_light_ink_on_black_give_the_same_image() -> None:
    a = preprocess(_stroke(255, 0), PRE)
    b = preprocess(_stroke(0, 255), PRE)
    assert a.shape == (1, 28, 28) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a[0, 14, 14] > 0.9 and a[0, 2, 2] < 0.05  # the stroke is ink = 1, the paper 0


def test_transparent_background_counts_as_paper() -> None:
    im = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    ImageDraw.Draw(im).line([(5, 30), (55, 30)], fill=(0, 0, 0, 255), width=6)
    x = preprocess(im, PRE)
    assert x[0, 14, 14] > 0.9 and x[0, 2, 2] < 0.05


def test_explicit_invert_and_normalisation() -> None:
    x = preprocess(_stroke(0, 255), {**PRE, "invert": False, "mean": 0.5, "std": 0.5, "channels": 3})
    assert x.shape == (3, 28, 28) and x.min() == pytest.approx(-1.0)
    assert x.max() == pytest.approx(1.0, abs=0.05)
    y = preprocess(_stroke(0, 255), {**PRE, "invert": True})
    assert y[0, 2, 2] == pytest.approx(1.0)  # forced inversion turns the black paper into ink


def test_folder_labels_follow_sorted_class_names(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        _stroke(255, 0).save(tmp_path / name / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    (tmp_path / "a" / "._x.png").write_bytes(b"macOS resource fork")  # hidden: skipped silently
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not class images: a/notes.txt"):
        folder = load_image_folder(tmp_path, PRE)
    assert folder.classes == ("a", "b") and folder.labels.tolist() == [0, 1]
    assert folder.x.shape == (2, 1, 28, 28)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing", PRE)


def test_adapt_and_folder_data_skip_the_same_entries(tmp_path: Path) -> None:
    """`adapt` took a macOS zip's `__MACOSX/` for a class, where `folder:` data skipped it: one rule."""
    from fewbit.data.folder import list_files

    for name in ("a", "b", "__MACOSX", ".git", "._c"):
        (tmp_path / name).mkdir()
        _stroke(255, 0).save(tmp_path / name / "x.png")
    _stroke(255, 0).save(tmp_path / "a" / "._x.png")  # a resource fork beside its image
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0")
    folder = load_image_folder(tmp_path, PRE)
    assert folder.classes == ("a", "b") and len(folder.files) == 2
    assert list_files(tmp_path).files == ["a/x.png", "b/x.png"]  # the training folder's listing agrees
    from fewbit.runtime.images import is_skipped_entry

    assert [n for n in ("__MACOSX", ".git", "._c", ".DS_Store", "a", "Thumbs.db") if is_skipped_entry(n)] == [
        "__MACOSX", ".git", "._c", ".DS_Store"]


def test_a_folder_is_listed_before_any_image_is_read_and_its_size_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fewbit.errors import LimitError
    from fewbit.runtime import images

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.png").write_bytes(b"never read")  # listing opens no file
    listing = images.list_image_folder(tmp_path, what="query")
    assert listing.classes == ("a", "b") and listing.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [Path(f).name for f in listing.files] == ["0.png", "1.png", "2.png"] * 2
    monkeypatch.setattr(images, "MAX_FOLDER_FILES", 7)  # 2 class folders + 6 files = 8 entries
    with pytest.raises(LimitError, match="holds more than 7 files"):
        images.list_image_folder(tmp_path, what="query")
    with pytest.raises(LimitError, match="holds more than 2 files"):
        images.list_images(tmp_path / "a", limit=2)
