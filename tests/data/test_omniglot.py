"""load_omniglot: zips and folders in the Omniglot layout, the ink convention, caching, and bad inputs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fewbit.data import omniglot
from fewbit.data.dataset import ImageDataset
from fewbit.data.omniglot import load_omniglot
from fewbit.errors import DataError
from tests.data.helpers import rename_to_bytes

pytestmark = pytest.mark.usefixtures("fewbit_cache")


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError], *words: str) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def _same(a: ImageDataset, b: ImageDataset) -> None:
    assert a.classes == b.classes
    assert a.class_alphabet == b.class_alphabet
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)


def test_zip_counts_names_and_order(tmp_path, make_omniglot_zip):
    path = make_omniglot_zip(tmp_path / "bg.zip", alphabets=3, characters=4, drawings=20)
    ds = load_omniglot(path)
    assert ds.name == "omniglot"
    assert (len(ds.alphabets), ds.num_classes, ds.num_images) == (3, 12, 240)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (240, 1, 28, 28)
    assert ds.labels.dtype == np.int64
    assert ds.classes[:5] == (
        "Alpha/character01",
        "Alpha/character02",
        "Alpha/character03",
        "Alpha/character04",
        "Beta/character01",
    )
    assert ds.classes == tuple(sorted(ds.classes))
    assert ds.class_alphabet == tuple(c.split("/")[0] for c in ds.classes)
    assert ds.alphabets == ("Alpha", "Beta", "Gamma")
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(12), 20))
    assert ds.images_per_class().tolist() == [20] * 12


def test_ink_is_255_and_background_0(tmp_path):
    im = Image.new("L", (105, 105), 255)
    ImageDraw.Draw(im).rectangle((40, 40, 64, 64), fill=0)  # a black square on white, as Omniglot draws
    path = tmp_path / "one.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Script/character01/0001_01.png", _png(im.convert("1")))
    full = load_omniglot(path, image_size=105)
    assert full.images[0, 0, 52, 52] == 255 and full.images[0, 0, 5, 5] == 0
    small = load_omniglot(path, image_size=28)
    assert small.images.shape == (1, 1, 28, 28)
    assert small.images[0, 0, 14, 14] == 255 and small.images[0, 0, 1, 1] == 0
    assert small.classes == ("Script/character01",) and small.class_alphabet == ("Script",)


def test_image_size(tmp_path, make_omniglot_zip):
    ds = load_omniglot(make_omniglot_zip(tmp_path / "bg.zip", drawings=2), image_size=14)
    assert ds.images.shape == (24, 1, 14, 14)


def test_zip_and_folder_forms_load_the_same(tmp_path, make_omniglot_zip, make_omniglot_folder):
    from_zip = load_omniglot(make_omniglot_zip(tmp_path / "bg.zip", drawings=3, seed=7))
    root = make_omniglot_folder(tmp_path / "parent", drawings=3, seed=7)
    _same(from_zip, load_omniglot(root))  # <root> itself
    _same(from_zip, load_omniglot(root.parent))  # the folder holding <root>
    bare = make_omniglot_folder(tmp_path / "bare", root="", drawings=3, seed=7)
    _same(from_zip, load_omniglot(bare))  # a folder whose children are alphabets
    rootless_zip = make_omniglot_zip(tmp_path / "rootless.zip", root="", drawings=3, seed=7)
    _same(from_zip, load_omniglot(rootless_zip))


def test_hidden_and_macosx_entries_are_ignored(tmp_path, make_omniglot_zip):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=2)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("__MACOSX/images_background_small1/Alpha/character01/._0101_01.png", b"junk")
        zf.writestr("images_background_small1/Alpha/character01/.hidden.png", b"junk")
    assert load_omniglot(path).num_images == 24


def test_second_load_hits_the_cache(tmp_path, make_omniglot_zip, fewbit_cache, monkeypatch):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=3)
    first = load_omniglot(path)
    assert len(list(fewbit_cache.glob("omniglot-*/index.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(omniglot, "decode_image", no_decoding)
    _same(first, load_omniglot(path))
    with pytest.raises(AssertionError):
        load_omniglot(path, cache=False)


def test_cache_is_keyed_by_content_and_size(tmp_path, make_omniglot_zip, fewbit_cache):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=2, seed=0)
    first = load_omniglot(path)
    make_omniglot_zip(path, drawings=2, seed=1)  # same path, new content
    second = load_omniglot(path)
    assert not np.array_equal(first.images, second.images)
    load_omniglot(path, image_size=20)
    keys = sorted(p.parent.name for p in fewbit_cache.glob("omniglot-*/index.npz"))
    assert len(keys) == 3, keys


def test_folder_cache_key_follows_file_content(tmp_path, make_omniglot_folder, fewbit_cache):
    root = make_omniglot_folder(tmp_path / "data", drawings=2)
    first = load_omniglot(root)
    victim = root / "Alpha" / "character01" / "0101_01.png"
    victim.write_bytes(_png(Image.new("1", (105, 105), 0)))  # all ink
    second = load_omniglot(root)
    assert len(list(fewbit_cache.glob("omniglot-*/index.npz"))) == 2
    assert second.images[0].min() == 255 and not np.array_equal(first.images[0], second.images[0])


def test_cache_disabled_writes_nothing(tmp_path, make_omniglot_zip, fewbit_cache):
    load_omniglot(make_omniglot_zip(tmp_path / "bg.zip", drawings=2), cache=False)
    assert not list(fewbit_cache.glob("*"))


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_omniglot(tmp_path / "nope.zip")
    _one_line_error(excinfo, "nope.zip", "does not exist")


def test_not_a_zip(tmp_path):
    path = tmp_path / "notes.zip"
    path.write_text("hello\nworld\n")
    with pytest.raises(DataError) as excinfo:
        load_omniglot(path)
    _one_line_error(excinfo, "not a zip")


def test_truncated_zip(tmp_path, make_omniglot_zip):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as excinfo:
        load_omniglot(path)
    _one_line_error(excinfo, "truncated", "download it again")


def test_corrupt_zip_member_is_named(tmp_path, make_omniglot_zip):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=2, compression=zipfile.ZIP_STORED)
    member = "images_background_small1/Beta/character02/0106_02.png"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    # the local header is 30 bytes plus the name and extra field; flip a byte inside the stored PNG
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as excinfo:
        load_omniglot(path, cache=False)
    _one_line_error(excinfo, member)


def test_corrupt_png_in_zip_is_named(tmp_path, make_omniglot_zip):
    path = make_omniglot_zip(tmp_path / "bg.zip", drawings=2)
    member = "images_background_small1/Gamma/character04/0999_01.png"
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(member, b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError) as excinfo:
        load_omniglot(path)
    _one_line_error(excinfo, member, "cannot decode")


def test_corrupt_png_in_folder_is_named(tmp_path, make_omniglot_folder):
    root = make_omniglot_folder(tmp_path / "data", drawings=2)
    bad = root / "Alpha" / "character03" / "0103_02.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    with pytest.raises(DataError) as excinfo:
        load_omniglot(root)
    _one_line_error(excinfo, str(bad), "cannot decode")


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_folder_without_layout(tmp_path, depth):
    folder = tmp_path / "flat"
    sub = folder.joinpath(*["d"] * (depth - 1)) if depth > 1 else folder
    sub.mkdir(parents=True)
    if depth:
        (sub / "a.png").write_bytes(_png(Image.new("1", (105, 105), 1)))
    with pytest.raises(DataError) as excinfo:
        load_omniglot(folder)
    _one_line_error(excinfo, "<Alphabet>/<character>/<image>.png")


def test_zip_without_layout(tmp_path):
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "no images here")
        zf.writestr("Alpha/0001_01.png", _png(Image.new("1", (105, 105), 1)))
    with pytest.raises(DataError) as excinfo:
        load_omniglot(path)
    _one_line_error(excinfo, "<Alphabet>/<character>/<image>.png")


def test_two_roots_are_refused(tmp_path, make_omniglot_folder):
    make_omniglot_folder(tmp_path / "both", root="images_background_small1", drawings=1)
    make_omniglot_folder(tmp_path / "both", root="images_background_small2", drawings=1)
    with pytest.raises(DataError) as excinfo:
        load_omniglot(tmp_path / "both")
    _one_line_error(excinfo, "images_background_small1", "images_background_small2")


@pytest.mark.parametrize("size", [0, 4, 1000, 28.0])
def test_bad_image_size(tmp_path, make_omniglot_zip, size):
    with pytest.raises(DataError) as excinfo:
        load_omniglot(make_omniglot_zip(tmp_path / "bg.zip", drawings=1), image_size=size)
    _one_line_error(excinfo, "image size")


def test_omniglot_source_spec(tmp_path, make_omniglot_zip):
    from fewbit.data.sources import load_source

    source = load_source(f"omniglot:{make_omniglot_zip(tmp_path / 'bg.zip', drawings=2)}")
    assert source.split("all").num_classes == 12
    assert {source.split(s).num_classes for s in ("train", "val", "test")} == {4}


@pytest.mark.omniglot
@pytest.mark.parametrize(
    ("name", "alphabets", "classes", "images"),
    [
        (
            "images_background_small1.zip",
            ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"),
            136,
            2720,
        ),
        (
            "images_background_small2.zip",
            ("Greek", "Japanese_(katakana)", "Latin", "Sanskrit", "Tagalog"),
            156,
            3120,
        ),
    ],
)
def test_real_background_small_sets(shared_omniglot, name, alphabets, classes, images):
    ds = load_omniglot(shared_omniglot / name)
    assert ds.alphabets == alphabets
    assert (ds.num_classes, ds.num_images) == (classes, images)
    assert ds.images.shape == (images, 1, 28, 28)
    assert ds.images_per_class().tolist() == [20] * classes
    assert ds.classes[0] == f"{alphabets[0]}/character01"
    # strokes are thin: most pixels are background (0), the brightest are ink (255)
    assert (ds.images == 0).mean() > 0.5 and ds.images.max() == 255


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_a_device_is_neither_a_zip_nor_a_folder() -> None:
    with pytest.raises(DataError, match="neither a zip file nor a folder"):
        load_omniglot(Path("/dev/zero"))


def test_a_member_that_inflates_hugely_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Script/character01/0001_01.png", _png(Image.new("1", (105, 105), 1)))
        with zf.open("Script/character01/0001_02.png", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(65):  # 65 MiB of zeros: a few tens of KB once deflated
                member.write(chunk)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"0001_02.png inflates to 68,157,440 bytes"):
        load_omniglot(path)


def test_an_extracted_folder_with_names_that_are_not_utf8(tmp_path, make_omniglot_folder, fewbit_cache):
    root = make_omniglot_folder(tmp_path / "data", drawings=2)
    rename_to_bytes(root / "Alpha" / "character01" / "0101_01.png", b"0101_\xe9.png")
    rename_to_bytes(root / "Beta", b"B\xeata")  # an alphabet named in Latin-1
    first = load_omniglot(root)
    assert "B\udceata/character01" in first.classes and first.num_images == 24
    _same(first, load_omniglot(root))
    assert len(list(fewbit_cache.glob("omniglot-*/index.npz"))) == 1
