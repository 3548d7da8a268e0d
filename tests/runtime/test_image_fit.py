"""Whether a model can see a folder's images: colour for a greyscale model (or the reverse), or a
size far from its input, is one warning line naming the mismatch and the model's data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fewbit.cli import main
from fewbit.runtime.images import fit_warnings, survey_images

GREY_MODEL = {"image_size": 28, "channels": 1}
COLOUR_MODEL = {"image_size": 32, "channels": 3}


def _write(path: Path, size: tuple[int, int], colour: tuple[int, int, int] | None, fmt: str = "PNG") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (250, 250, 250))
    fill = colour or (30, 30, 30)
    ImageDraw.Draw(im).ellipse([size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4], fill=fill)
    im.save(path, fmt)
    return str(path)


def _folder(root: Path, colour: bool, size: tuple[int, int] = (90, 70), fmt: str = "PNG") -> list[str]:
    palette = [(200, 30, 30), (30, 160, 40), (40, 60, 210)]
    return [_write(root / f"c{c}" / f"{i}.{fmt.lower()}", size, palette[c] if colour else None, fmt)
            for c in range(3) for i in range(2)]


def test_survey_tells_colour_from_grey_even_in_rgb_jpegs(tmp_path: Path) -> None:
    grey = survey_images(_folder(tmp_path / "g", colour=False, fmt="JPEG"))  # RGB JPEGs of grey pixels
    colour = survey_images(_folder(tmp_path / "c", colour=True, fmt="JPEG"))
    assert (grey.sampled, grey.colour) == (6, 0)
    assert (colour.sampled, colour.colour) == (6, 6)
    assert colour.median_side == 70


def test_colour_images_for_a_greyscale_model_warn_naming_the_data(tmp_path: Path) -> None:
    lines = fit_warnings(_folder(tmp_path, colour=True), GREY_MODEL, model="m", data="Omniglot")
    assert len(lines) == 1
    assert "m was trained on 28x28 greyscale images (Omniglot)" in lines[0] and "6 of 6" in lines[0]
    assert fit_warnings(_folder(tmp_path / "g", colour=False), GREY_MODEL) == []


def test_greyscale_images_for_a_colour_model_warn(tmp_path: Path) -> None:
    lines = fit_warnings(_folder(tmp_path, colour=False), COLOUR_MODEL)
    assert len(lines) == 1 and "colour images" in lines[0] and "greyscale" in lines[0]
    assert fit_warnings(_folder(tmp_path / "c", colour=True), COLOUR_MODEL) == []


@pytest.mark.parametrize(("side", "warned"), [(10, True), (20, False), (200, False), (400, True)])
def test_a_size_far_from_the_input_warns(tmp_path: Path, side: int, warned: bool) -> None:
    lines = fit_warnings(_folder(tmp_path, colour=True, size=(side, side)), COLOUR_MODEL)
    assert bool(lines) == warned
    if warned:
        assert f"{side} pixels on their shorter side" in lines[0]


def test_unreadable_files_are_left_to_the_loader(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert survey_images([str(bad)]).sampled == 0
    assert fit_warnings([str(bad)], GREY_MODEL) == []


def test_adapt_and_eval_with_the_greyscale_model_on_colour_photos_warn_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _folder(tmp_path / "support", colour=True)
    _folder(tmp_path / "query", colour=True)
    code = main(["adapt", "--model", "omniglot-conv4-w4", "--support", str(tmp_path / "support"),
                 "--query", str(tmp_path / "query"), "--json"])
    err = capsys.readouterr().err
    assert code == 0
    warned = [line for line in err.splitlines() if line.startswith("fewbit: warning:")]
    assert len(warned) == 1 and "greyscale" in warned[0] and "Omniglot" in warned[0] and "colour" in warned[0]
    code = main(["eval", "--model", "omniglot-conv4-w4", "--dataset", f"folder:{tmp_path / 'query'}",
                 "--split", "all", "--ways", "3", "--queries", "1", "--tasks", "2", "--json"])
    err = capsys.readouterr().err
    assert code == 0
    assert sum(line.startswith("fewbit: warning:") and "greyscale" in line for line in err.splitlines()) == 1


def test_matching_images_give_no_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for split in ("support", "query"):
        for c in range(3):
            (tmp_path / split / f"c{c}").mkdir(parents=True)
            im = Image.fromarray(np.eye(60, dtype=np.uint8) * (80 * (c + 1)))
            im.save(tmp_path / split / f"c{c}" / "0.png")
    code = main(["adapt", "--model", "omniglot-conv4-w4", "--support", str(tmp_path / "support"),
                 "--query", str(tmp_path / "query"), "--json"])
    assert code == 0
    assert "warning" not in capsys.readouterr().err
