"""The glyphs dataset: class selection, drawing, determinism, caching; the full build is marked slow."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fewbit.data import glyphs
from fewbit.data.dataset import ImageDataset
from fewbit.errors import DataError

# A, alpha, zhe, Georgian an, for-all, white smiling face, euro sign.
FEW = (0x41, 0x3B1, 0x416, 0x10D0, 0x2200, 0x263A, 0x20AC)


def test_alphabet_of_known_blocks():
    assert glyphs.alphabet_of(ord("A")) == "Basic Latin"
    assert glyphs.alphabet_of(0x3B1) == "Greek"
    assert glyphs.alphabet_of(0x416) == "Cyrillic"
    assert glyphs.alphabet_of(0x2200) == "Mathematical Operators"
    assert glyphs.alphabet_of(0x1E9E) == "Latin Extended"  # merged from Latin Extended Additional
    assert glyphs.alphabet_of(0xE000) is None  # private use


@pytest.mark.parametrize(
    ("char", "expected"),
    [
        ("A", True),
        ("\u044f", True),  # Cyrillic ya
        ("\u00e9", False),  # e acute: an accented variant
        ("\ufb01", False),  # fi ligature: an NFKD twin of "fi"
        ("\u00b2", False),  # superscript two
        ("\u0301", False),  # combining acute accent
        (" ", False),
        ("\u2003", False),  # em space
        ("\x07", False),  # control
    ],
)
def test_candidates_skip_variants_marks_and_blanks(char: str, expected: bool):
    assert glyphs._is_candidate(ord(char)) is expected


def test_class_needs_enough_fonts():
    latin_a = glyphs._class_of(ord("A"))
    assert latin_a is not None and len(latin_a.fonts) >= glyphs.MIN_FONTS
    assert latin_a.name == "Basic Latin/U+0041"
    assert glyphs._class_of(0xE000) is None
    assert glyphs._class_of(0x2800) is None  # braille blank renders empty in every font


def test_build_few_classes_shapes_and_ink():
    arrays = glyphs.build_glyph_arrays(FEW, drawings=6)
    images = arrays["images"]
    assert images.shape == (len(FEW) * 6, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(arrays["labels"], np.repeat(np.arange(len(FEW)), 6))
    assert arrays["classes"][1] == "Greek/U+03B1"
    assert list(arrays["alphabets"][:3]) == ["Basic Latin", "Greek", "Cyrillic"]
    ink = images.astype(np.float64) / 255.0
    assert (images.max(axis=(1, 2)) >= 200).all()  # every drawing has solid ink
    coverage = ink.mean(axis=(1, 2))
    assert ((coverage > 0.03) & (coverage < 0.7)).all()
    assert ink[:, 0, :].mean() < 0.05 and ink[:, :, 0].mean() < 0.05  # the border is background (0)


def test_drawings_vary_within_a_class():
    images = glyphs.build_glyph_arrays([ord("A")], drawings=8)["images"]
    assert len({im.tobytes() for im in images}) == 8


def test_same_seed_same_images_other_seed_different():
    a = glyphs.build_glyph_arrays(FEW[:3], seed=3, drawings=4)["images"]
    b = glyphs.build_glyph_arrays(FEW[:3], seed=3, drawings=4)["images"]
    c = glyphs.build_glyph_arrays(FEW[:3], seed=4, drawings=4)["images"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_class_does_not_depend_on_the_other_classes():
    alone = glyphs.build_glyph_arrays([0x416], drawings=5)["images"]
    among = glyphs.build_glyph_arrays([0x41, 0x3B1, 0x416], drawings=5)["images"]
    np.testing.assert_array_equal(alone, among[10:15])


def test_image_size_is_honoured():
    images = glyphs.build_glyph_arrays([0x41], image_size=20, drawings=3)["images"]
    assert images.shape == (3, 20, 20)
    assert (images.max(axis=(1, 2)) >= 200).all()


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size": 4}, {"image_size": 28.0}, {"seed": -1}, {"drawings": 0}, {"drawings": True}],
)
def test_bad_arguments_are_data_errors(kwargs):
    with pytest.raises(DataError):
        glyphs.build_glyph_arrays([0x41], **kwargs)
    with pytest.raises(DataError):
        glyphs.load_glyphs(**kwargs)


def test_undrawable_character_is_a_data_error():
    with pytest.raises(DataError, match="U\\+E000"):
        glyphs.build_glyph_arrays([0xE000])


def test_canonical_images_tell_look_alikes():
    latin_a, greek_alpha, greek_capital_alpha = (glyphs._class_of(c) for c in (0x41, 0x3B1, 0x391))
    canon = glyphs.canonical_images([latin_a, greek_alpha, greek_capital_alpha])
    d = glyphs.image_distances(canon, canon)
    assert d[0, 2] < 0.01  # Latin A and Greek Alpha draw the same
    assert d[0, 1] > glyphs.DUPLICATE_DISTANCE


def test_cache_key_tracks_arguments():
    keys = {
        glyphs.cache_key(image_size=28, seed=0, drawings=20),
        glyphs.cache_key(image_size=32, seed=0, drawings=20),
        glyphs.cache_key(image_size=28, seed=1, drawings=20),
        glyphs.cache_key(image_size=28, seed=0, drawings=10),
    }
    assert len(keys) == 4
    assert glyphs.cache_key(image_size=28, seed=0, drawings=20) == glyphs.cache_key(image_size=28, seed=0, drawings=20)


def test_load_glyphs_caches_and_reloads(fewbit_cache: Path, monkeypatch: pytest.MonkeyPatch):
    few = tuple(glyphs._class_of(c) for c in FEW)
    monkeypatch.setattr(glyphs, "glyph_classes", lambda: few)
    first = glyphs.load_glyphs(drawings=3)
    assert isinstance(first, ImageDataset) and first.name == "glyphs"
    assert len(list(fewbit_cache.glob("glyphs-*/index.npz"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the cached arrays should have been used")

    monkeypatch.setattr(glyphs, "build_glyph_arrays", no_build)
    again = glyphs.load_glyphs(drawings=3)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert again.labels.dtype == np.int64
    assert first.classes == again.classes and first.class_alphabet == again.class_alphabet
    with pytest.raises(AssertionError, match="cached"):
        glyphs.load_glyphs(drawings=3, cache=False)


# --- the full build (slow: about 10-30 s on two cores) ---------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ImageDataset, float, Path]]:
    """The full dataset, built cold into a private cache: (dataset, seconds, cache folder)."""
    cache = tmp_path_factory.mktemp("glyphs-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWBIT_CACHE", str(cache))
        glyphs.glyph_classes.cache_clear()
        start = time.perf_counter()
        ds = glyphs.load_glyphs()
        yield ds, time.perf_counter() - start, cache


@pytest.mark.slow
def test_full_build_counts(full):
    ds, seconds, _ = full
    info = ds.info()
    print(f"glyphs: {info['classes']} classes, {info['alphabets']} alphabets, built in {seconds:.1f} s")
    assert ds.num_classes >= 1000
    assert len(ds.alphabets) >= 10
    assert ds.image_size == (28, 28)
    assert (ds.images_per_class() == 20).all()
    per_alphabet = {a: ds.class_alphabet.count(a) for a in ds.alphabets}
    assert min(per_alphabet.values()) >= glyphs.MIN_ALPHABET_CLASSES


@pytest.mark.slow
def test_full_build_names_and_ink(full):
    ds, _, _ = full
    assert len(set(ds.classes)) == ds.num_classes
    for name, alphabet in zip(ds.classes, ds.class_alphabet):
        assert re.fullmatch(rf"{re.escape(alphabet)}/U\+[0-9A-F]{{4,5}}", name)
    assert (ds.images.max(axis=(1, 2, 3)) >= 128).all()
    assert ds.images.mean() / 255.0 < 0.5  # ink on a background of 0


@pytest.mark.slow
def test_full_build_drops_look_alikes_and_variants(full):
    ds, _, _ = full
    chosen = {int(name.rsplit("U+", 1)[1], 16) for name in ds.classes}
    assert ord("A") in chosen
    assert not {0x391, 0x410, 0xE9, 0xFB01} & chosen  # Greek Alpha, Cyrillic A, e acute, fi ligature
    classes = glyphs.glyph_classes()
    canon = glyphs.canonical_images(classes)
    d = glyphs.image_distances(canon, canon)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 0.0  # no two classes share a canonical rendering
    first_font = np.array([glyphs._reference_fonts(g)[0] for g in classes])
    same = first_font[:, None] == first_font[None, :]
    assert d[same].min() >= glyphs.DUPLICATE_DISTANCE


@pytest.mark.slow
def test_full_build_matches_a_partial_build_and_the_cache(full):
    ds, _, cache = full
    assert len(list(cache.glob("glyphs-*/index.npz"))) == 1
    picks = np.random.default_rng(0).choice(ds.num_classes, 12, replace=False)
    codepoints = [int(ds.classes[i].rsplit("U+", 1)[1], 16) for i in picks]
    partial = glyphs.build_glyph_arrays(codepoints)["images"]
    for k, i in enumerate(picks):
        np.testing.assert_array_equal(partial[k * 20 : (k + 1) * 20], ds.images[ds.labels == i][:, 0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWBIT_CACHE", str(cache))
        mp.setattr(glyphs, "build_glyph_arrays", lambda **kwargs: pytest.fail("cache was not used"))
        again = glyphs.load_glyphs()
    np.testing.assert_array_equal(again.images, ds.images)
    assert again.classes == ds.classes
