"""Fixtures for the training tests: a tiny Omniglot-layout image source and small configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_omniglot_folder


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The spec of a tiny image source: 5 alphabets x 5 characters x 8 drawings (train 15, val 5, test 5 classes)."""
    root = tmp_path_factory.mktemp("tiny-omniglot")
    folder = make_omniglot_folder(root, root="images_background", alphabets=5, characters=5, drawings=8, seed=3)
    return f"omniglot:{folder}"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Where a test's run directory goes (not created)."""
    return tmp_path / "run"


@pytest.fixture(scope="session")
def tiny_colour(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The spec of a tiny colour image folder: 15 classes x 6 images, 20x20 RGB (train 9, val 3, test 3 classes)."""
    from fewbit.data.synthetic import write_image_folder

    root = write_image_folder(tmp_path_factory.mktemp("tiny-colour") / "d", classes=15, images_per_class=6, size=20)
    return f"folder:{root}"
