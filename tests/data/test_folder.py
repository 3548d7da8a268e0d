"""`folder:` and `csvsplit:` sources: layouts, splits, formats and modes, the cache, and bad input."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewbit.cli import main
from fewbit.data import ImageOptions, load_source
from fewbit.data.synthetic import write_image_folder
from fewbit.errors import DataError
from fewbit.runtime.images import load_image
from fewbit.runtime.preprocess import ImagePreprocessing
from tests.data.helpers import rename_to_bytes

pytestmark = pytest.mark.usefixtures("fewbit_cache")
QUIET = {"progress": False}


def _opts(**kw: object) -> ImageOptions:
    return ImageOptions(**{"image_size": 16, **kw})  # type: ignore[arg-type]


def _info(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["data", "info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_flat_tree_counts_and_a_seeded_class_disjoint_split(tmp_path: Path, capsys) -> None:
    write_image_folder(tmp_path / "d", classes=10, images_per_class=4, size=20)
    info = _info(capsys, f"folder:{tmp_path / 'd'}", "--image-size", "16")
    assert (info["classes"], info["images"], info["channels"], info["groups"]) == (10, 40, 3, 0)
    assert info["splits"] == {"train": 6, "val": 2, "test": 2, "all": 10}
    assert info["split_images"] == {"train": 24, "val": 8, "test": 8, "all": 40}
    assert "class-disjoint" in info["split_rule"] and info["layout"].startswith("flat")
    source = load_source(f"folder:{tmp_path / 'd'}", options=_opts())
    names = {k: set(source.split(k).classes) for k in ("train", "val", "test")}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    again = load_source(f"folder:{tmp_path / 'd'}", options=_opts())
    assert again.split("test").classes == source.split("test").classes  # seeded: the same split
    other = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_seed=7))
    assert other.split("test").classes != source.split("test").classes
    wide = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.8, 0.1)))
    assert wide.split("train").num_classes == 8


def test_grouped_tree_splits_keep_groups_apart(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "g", classes=15, images_per_class=3, size=16, groups=5)
    source = load_source(f"folder:{tmp_path / 'g'}", options=_opts())
    info = source.info()
    assert info["groups"] == 5 and info["classes"] == 15 and info["layout"].startswith("grouped")
    groups = {k: set(source.split(k).class_alphabet) for k in ("train", "val", "test")}
    assert groups["train"].isdisjoint(groups["val"]) and groups["train"].isdisjoint(groups["test"])
    assert source.split("all").classes[0] == "group0/class000"


def test_explicit_split_folders(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("val", 3), ("test", 4)):
        write_image_folder(tmp_path / "e" / split, classes=n, images_per_class=3, size=16, seed=len(split))
    source = load_source(f"folder:{tmp_path / 'e'}", options=_opts())
    assert {k: source.split(k).num_classes for k in ("train", "val", "test", "all")} == {
        "train": 6, "val": 3, "test": 4, "all": 13}
    assert source.notes["split_rule"] == "explicit train/val/test folders"
    assert all(c.startswith("test/") for c in source.split("test").classes)
    # without val/, validation classes are held out of train
    (tmp_path / "e" / "val").rename(tmp_path / "aside")
    held = load_source(f"folder:{tmp_path / 'e'}", options=_opts())
    assert held.split("train").num_classes + held.split("val").num_classes == 6
    assert "held out" in held.notes["split_rule"]


def _save(im: Image.Image, path: Path, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


def test_mixed_formats_modes_and_sizes_decode_like_the_runtime(tmp_path: Path) -> None:
    root = tmp_path / "m"
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), "RGB")
    for c in range(3):
        _save(rgb.convert("L"), root / f"c{c}" / "grey.png")
        _save(rgb, root / f"c{c}" / "colour.jpg", quality=90)
        _save(rgb.convert("RGBA"), root / f"c{c}" / "alpha.png")
        _save(rgb.convert("P"), root / f"c{c}" / "palette.gif")
        big = Image.fromarray((rng.integers(0, 65535, (50, 20))).astype(np.uint16))
        _save(big, root / f"c{c}" / "deep.png")  # 16-bit greyscale, another size
    source = load_source(f"folder:{root}", options=_opts(split_fractions=(0.34, 0.33), normalize=False))
    ds = source.split("all")
    assert ds.num_images == 15 and ds.channels == 3 and ds.images.shape == (15, 3, 16, 16)
    rule = source.preprocessing
    for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        np.testing.assert_array_equal(ds.tensor(np.array([i]))[0].numpy(), load_image(path, rule))
    files = sorted(p.name for p in (root / "c0").iterdir())
    deep = ds.images[files.index("deep.png")]
    assert 60 < deep.mean() < 200  # 16-bit greyscale is scaled; clipping would give 255 almost everywhere


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    pixels = ImagePreprocessing(image_size=64, channels=1).decode_bytes(buf.getvalue(), "ramp.png")
    assert pixels.min() == 0 and pixels.max() >= 254  # convert("L") would have clipped to 255 almost everywhere
    assert 100 < pixels.mean() < 155


def test_greyscale_folders_are_detected_and_channels_can_be_forced(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "c", classes=4, images_per_class=3, size=16)
    grey = tmp_path / "g"
    for p in (tmp_path / "c").rglob("*.png"):
        _save(Image.open(p).convert("L"), grey / p.relative_to(tmp_path / "c"))
    assert load_source(f"folder:{grey}", options=_opts(split_fractions=(0.5, 0.25))).split("all").channels == 1
    forced = load_source(f"folder:{tmp_path / 'c'}", options=_opts(channels=1, split_fractions=(0.5, 0.25)))
    assert forced.split("all").channels == 1 and forced.preprocessing.channels == 1


def test_normalisation_uses_training_statistics(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "d", classes=10, images_per_class=4, size=16)
    source = load_source(f"folder:{tmp_path / 'd'}", options=_opts())
    train = source.split("train")
    x = train.scaled(np.arange(train.num_images)).numpy()
    np.testing.assert_allclose(source.preprocessing.mean, x.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(source.preprocessing.std, x.std(axis=(0, 2, 3)), atol=1e-4)
    assert source.split("test").mean == source.preprocessing.mean  # every split: training statistics
    z = train.tensor(np.arange(train.num_images)).numpy()
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)


def test_cache_is_memory_mapped_reused_and_rebuilt_when_broken(tmp_path: Path, fewbit_cache: Path) -> None:
    write_image_folder(tmp_path / "d", classes=5, images_per_class=3, size=16)
    first = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.4, 0.2)))
    assert isinstance(first.split("all").pixels, np.memmap)
    expected = np.array(first.split("all").images)  # a copy: the mapped file is about to be damaged
    del first
    (entry,) = [p for p in fewbit_cache.iterdir() if p.name.startswith("images-")]
    stamp = (entry / "pixels.npy").stat().st_mtime_ns
    second = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.4, 0.2)))
    assert (entry / "pixels.npy").stat().st_mtime_ns == stamp  # reused, not rebuilt
    np.testing.assert_array_equal(expected, second.split("all").images)
    del second
    with open(entry / "pixels.npy", "r+b") as f:  # a torn write: the array is cut short
        f.truncate(200)
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        third = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.4, 0.2)))
    np.testing.assert_array_equal(expected, third.split("all").images)
    (entry / "index.npz").write_bytes(b"PK\x03\x04 not a zip")  # the index is damaged (BadZipFile)
    with pytest.warns(UserWarning, match="rebuilding"):
        fourth = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.4, 0.2)))
    assert fourth.split("all").num_images == 15
    # an edited image makes a new entry
    victim = next((tmp_path / "d" / "class000").iterdir())
    Image.new("RGB", (16, 16), (255, 0, 0)).save(victim)
    os.utime(victim, ns=(stamp + 10**9, stamp + 10**9))
    fifth = load_source(f"folder:{tmp_path / 'd'}", options=_opts(split_fractions=(0.4, 0.2)))
    assert not np.array_equal(expected, fifth.split("all").images)


def test_hidden_and_loose_files(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d", classes=4, images_per_class=3, size=16)
    (root / "class000" / "._000.png").write_bytes(b"macOS resource fork")  # hidden: silent
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "README.txt").write_text("about the data")
    Image.new("RGB", (16, 16)).save(root / "stray.png")  # an image outside any class folder
    with pytest.warns(UserWarning) as caught:
        source = load_source(f"folder:{root}", options=_opts(split_fractions=(0.5, 0.25)))
    text = " ".join(str(w.message) for w in caught)
    assert "README.txt" in text and "stray.png" in text and "._000" not in text
    assert source.split("all").num_images == 12 and source.notes["ignored_files"] == 2


def test_fifo_and_links_to_devices_are_skipped_not_read(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d", classes=4, images_per_class=3, size=16)
    os.mkfifo(root / "class000" / "pipe.png")
    os.symlink("/dev/zero", root / "class001" / "zero.png")
    with pytest.warns(UserWarning, match="not a regular file"):
        source = load_source(f"folder:{root}", options=_opts(split_fractions=(0.5, 0.25)))
    assert source.split("all").num_images == 12


def test_unreadable_images_are_named_and_skipped(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "d", classes=4, images_per_class=3, size=16)
    (root / "class002" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    huge = Image.new("L", (8000, 6000))  # 48 megapixels, in a small file
    huge.save(root / "class003" / "huge.png", optimize=True)
    with pytest.warns(UserWarning) as caught:
        source = load_source(f"folder:{root}", options=_opts(split_fractions=(0.5, 0.25)))
    text = " ".join(str(w.message) for w in caught)
    assert "skipped 2 unreadable image(s)" in text and "broken.png" in text and "huge.png" in text
    assert "8000x6000 pixels" in text
    assert source.split("all").num_images == 12 and source.notes["unreadable_images"] == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no class folders with images"),
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("mixed", "mixes <class>/<image>"),
        ("two_groups", "group-disjoint"),
        ("only_train", "no test/"),
    ],
)
def test_bad_folders_are_one_line(tmp_path: Path, capsys, setup: str, message: str) -> None:
    root = tmp_path / "d"
    if setup == "empty":
        root.mkdir()
        (root / "notes.txt").write_text("no images here")
    elif setup == "file":
        root.write_text("not a folder")
    elif setup == "mixed":
        write_image_folder(root, classes=3, images_per_class=2, size=16)
        write_image_folder(root / "grp", classes=3, images_per_class=2, size=16)
    elif setup == "two_groups":
        write_image_folder(root, classes=6, images_per_class=2, size=16, groups=2)
    elif setup == "only_train":
        write_image_folder(root / "train", classes=3, images_per_class=2, size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["data", "info", f"folder:{root}", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fewbit: error:") and message in err and err.count("\n") == 1, err


def test_a_class_too_small_for_the_task_is_named(tmp_path: Path) -> None:
    from fewbit.data.episodes import EpisodeSampler

    root = write_image_folder(tmp_path / "d", classes=6, images_per_class=5, size=16)
    for p in sorted((root / "class004").iterdir())[2:]:
        p.unlink()
    ds = load_source(f"folder:{root}", options=_opts(split_fractions=(0.5, 0.25))).split("all")
    with pytest.raises(DataError, match=r"class 'class004' of .* has only 2 image\(s\)"):
        EpisodeSampler(ds, ways=5, shots=1, queries=3)


def _csvsplit(root: Path, classes: dict[str, int], per_class: int = 3) -> Path:
    write_image_folder(root / "src", classes=sum(classes.values()), images_per_class=per_class, size=20)
    (root / "images").mkdir(parents=True)
    names = sorted(os.listdir(root / "src"))
    start = 0
    for split, n in classes.items():
        lines = ["filename,label"]
        for c in names[start : start + n]:
            for p in sorted((root / "src" / c).iterdir()):
                new = f"{c}_{p.name}"
                p.rename(root / "images" / new)
                lines.append(f"{new},n0{c}")
        start += n
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_csvsplit_reads_the_standard_splits(tmp_path: Path, capsys) -> None:
    root = _csvsplit(tmp_path / "mini", {"train": 5, "val": 3, "test": 4})
    info = _info(capsys, f"csvsplit:{root}", "--image-size", "16")
    assert info["splits"] == {"train": 5, "val": 3, "test": 4, "all": 12}
    assert info["split_images"]["test"] == 12 and info["channels"] == 3 and info["images"] == 36
    assert info["split_rule"] == "train.csv / val.csv / test.csv"


def test_csvsplit_naming_a_missing_file_is_one_line(tmp_path: Path, capsys) -> None:
    root = _csvsplit(tmp_path / "mini", {"train": 3, "val": 3, "test": 3})
    with open(root / "test.csv", "a") as f:
        f.write("ghost.jpg,n0class999\n")
    code = main(["data", "info", f"csvsplit:{root}"])
    err = capsys.readouterr().err
    assert code == 2 and "test.csv line 11: ghost.jpg is not in" in err and err.count("\n") == 1
    (root / "val.csv").unlink()
    (root / "train.csv").unlink()
    assert main(["data", "info", f"csvsplit:{root}"]) == 2
    assert "train.csv is missing" in capsys.readouterr().err


def test_file_names_that_are_not_utf8_are_read_and_cached(tmp_path: Path, fewbit_cache: Path) -> None:
    root = write_image_folder(tmp_path / "d", classes=4, images_per_class=3, size=16)
    rename_to_bytes(next((root / "class000").iterdir()), b"caf\xe9.png")  # Latin-1 names, as old zips hold
    rename_to_bytes(root / "class001", b"cl\xe4ss")
    (root / "class002" / "broken.png").write_bytes(b"not an image")
    rename_to_bytes(root / "class002" / "broken.png", b"br\xffken.png")
    for cached in (False, True):
        with pytest.warns(UserWarning, match="br\udcffken") as caught:
            source = load_source(f"folder:{root}", options=_opts(split_fractions=(0.5, 0.25)))
        assert ("(as cached)" in " ".join(str(w.message) for w in caught)) is cached
        assert source.split("all").num_images == 12
        assert "cl\udce4ss" in source.split("all").classes
    assert len(list(fewbit_cache.glob("images-*"))) == 1


def test_csvsplit_rows_naming_one_image_twice_are_dropped_with_a_warning(tmp_path: Path) -> None:
    root = _csvsplit(tmp_path / "mini", {"train": 3, "val": 3, "test": 3})
    train = (root / "train.csv").read_text().splitlines()
    first = train[1].split(",")[0]
    with open(root / "train.csv", "a") as f:
        f.write(f"{train[1]}\n./{first},{train[1].split(',')[1]}\n")  # the same file twice more, one spelt ./
    with open(root / "test.csv", "a") as f:
        f.write(f"{train[2]}\n")  # a training image listed again for testing
    with pytest.warns(UserWarning, match=r"dropped 3 row\(s\) naming an image listed before: train\.csv line 11 "
                      rf"\({first}; first at train\.csv line 2\)"):
        source = load_source(f"csvsplit:{root}", options=_opts())
    assert source.split("all").num_images == 27
    assert {k: source.split(k).num_images for k in ("train", "val", "test")} == {"train": 9, "val": 9, "test": 9}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x" * 140_000 + ".png,n0class999", "test.csv line 11: a cell longer than the 131,072 characters"),
        ('"a\0b.png",n0class999', "test.csv line 11: the file name 'a\\x00b.png' holds a NUL character"),
        ("x" * 5_000 + ".png,n0class999", "test.csv line 11: cannot look up xxx"),
    ],
    ids=["long-cell", "nul", "long-name"],
)
def test_csvsplit_cells_that_no_file_name_can_be_are_one_line(tmp_path: Path, capsys, row: str, message: str) -> None:
    root = _csvsplit(tmp_path / "mini", {"train": 3, "val": 3, "test": 3})
    with open(root / "test.csv", "a") as f:
        f.write(row + "\n")
    assert main(["data", "info", f"csvsplit:{root}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fewbit: error:") and message in err and err.count("\n") == 1, err[:300]
