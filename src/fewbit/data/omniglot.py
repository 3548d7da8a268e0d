"""Omniglot background sets, read straight from their zip (or an extracted folder) into an ImageDataset.

Layout: `<root>/<Alphabet>/characterNN/<id>_<drawer>.png`, 105x105, white background, black strokes.
Images are inverted (ink = 255) and resized once; the decoded arrays are cached by content hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from fewbit.data.cache import cached_arrays
from fewbit.data.dataset import ImageDataset
from fewbit.data.options import InkOptions
from fewbit.data.registry import register_source
from fewbit.data.sources import ImageSource, ink_preprocessing
from fewbit.data.splits import split_by_alphabet
from fewbit.errors import DataError
from fewbit.runtime.preprocess import (
    MAX_IMAGE_FILE_BYTES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    ImagePreprocessing,
    read_input_file,
)

NAME = "omniglot"
OMNIGLOT_HELP = "give an Omniglot background zip (e.g. images_background_small1.zip) or its extracted folder"

MAX_ARCHIVE_BYTES = 16 << 30  # all members of one archive, inflated
_CACHE_VERSION = 2  # bump whenever decoding changes, so that stale cache files are never read
_CACHE_KEYS = frozenset({"images", "labels", "classes", "class_alphabet"})
# What a damaged zip member or image file raises: CRC and header errors, truncated deflate streams,
# PIL's UnidentifiedImageError (an OSError) and its SyntaxError for broken PNG chunks.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


@dataclasses.dataclass(frozen=True, eq=False)
class Archive:
    """The files of a zip or folder by relative POSIX path (hidden and `__MACOSX` entries left out)."""

    path: Path
    names: tuple[str, ...]
    is_zip: bool
    _read: Callable[[str], bytes]
    _sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # inflated size of each zip member

    def where(self, name: str) -> str:
        """How to name file `name` in a message: `zip member X` or the file's path."""
        return f"{self.path} member {name}" if self.is_zip else str(self.path / name)

    def read(self, name: str) -> bytes:
        """The bytes of `name` (at most MAX_IMAGE_FILE_BYTES); a damaged member raises DataError naming it."""
        size = self._sizes.get(name, 0)
        if size > MAX_IMAGE_FILE_BYTES:
            raise DataError(f"{self.where(name)} inflates to {size:,} bytes, more than the "
                            f"{MAX_IMAGE_FILE_BYTES:,} an image file may hold; remove it from the zip")
        try:
            return self._read(name)
        except DataError:
            raise
        except _READ_ERRORS as exc:
            fix = "the zip is damaged; download it again" if self.is_zip else "replace the file"
            raise DataError(f"cannot read {self.where(name)} ({_one_line(exc)}); {fix}") from None


@contextlib.contextmanager
def open_archive(path: Path, *, what: str = OMNIGLOT_HELP) -> Iterator[Archive]:
    """The files of the zip or folder at `path`; `what` ends each error message (what to give instead)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist; {what}")
    if path.is_dir():
        yield Archive(path, _folder_names(path), False,
                      lambda name: read_input_file(path / name, MAX_IMAGE_FILE_BYTES))
        return
    if not stat.S_ISREG(path.stat().st_mode):
        raise DataError(f"{path} is neither a zip file nor a folder (a device, pipe or socket); {what}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise DataError(_bad_zip_message(path, what)) from None
    except OSError as exc:
        raise DataError(f"cannot open {path} ({_one_line(exc)}); {what}") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and _visible(i.filename)]
        total = sum(i.file_size for i in infos)
        if total > MAX_ARCHIVE_BYTES:
            raise DataError(f"{path} inflates to {total / 2**30:.1f} GiB, more than the "
                            f"{MAX_ARCHIVE_BYTES >> 30} GiB fewbit reads from one zip; {what}")
        names = tuple(sorted(i.filename for i in infos))
        yield Archive(path, names, True, zf.read, {i.filename: i.file_size for i in infos})


def ink_rule(image_size: int) -> ImagePreprocessing:
    """How Omniglot files are decoded: greyscale, inverted (ink = 255), LANCZOS-resized to `image_size`
    (the MAML reference code's 105 -> 28 filter)."""
    return ImagePreprocessing(image_size=image_size, channels=1, invert=True, resize="stretch", resample="lanczos")


def decode_image(data: bytes, *, image_size: int, where: str) -> np.ndarray:
    """uint8 `[image_size, image_size]` with ink = 255 from the bytes of a black-on-white image file."""
    try:
        return ink_rule(image_size).decode_bytes(data, where)[0]
    except DataError as exc:
        raise DataError(f"{exc}; replace the file") from None


def load_omniglot(path: Path, *, image_size: int = 28, cache: bool = True) -> ImageDataset:
    """The Omniglot background set at `path` (a zip, or its extracted folder) as an ImageDataset.

    One class per (alphabet, character), named `Alphabet/characterNN`, in sorted order; images are
    uint8 `[n, image_size, image_size]` with ink = 255. With `cache`, the decoded arrays are kept under
    `fewbit.data.cache.cache_dir()`, keyed by the sha256 of the source's bytes and `image_size`.
    """
    _check_image_size(image_size)
    with open_archive(path) as archive:
        members = _find_layout(archive)
        if archive.is_zip:
            digest = _sha256_file(archive.path)
            read = archive.read
        else:  # a folder has no single file to hash: hash the names and bytes of the images used
            blobs = {name: archive.read(name) for name, _, _ in members}
            digest = _sha256_blobs(blobs)
            read = blobs.__getitem__

        def build() -> dict[str, np.ndarray]:
            return _decode_all(archive, members, read, image_size)

        key = f"{NAME}-{digest[:40]}-{image_size}px-v{_CACHE_VERSION}"
        arrays = cached_arrays(key, build, enabled=cache)
        if set(arrays) != _CACHE_KEYS:  # a foreign file under our key: never trust it
            arrays = build()
    return ImageDataset(
        name=NAME,
        pixels=arrays["images"],
        labels=arrays["labels"].astype(np.int64),
        classes=tuple(str(c) for c in arrays["classes"]),
        class_alphabet=tuple(str(a) for a in arrays["class_alphabet"]),
    )


def _find_layout(archive: Archive) -> list[tuple[str, str, str]]:
    """(file name, alphabet, character) of every `<Alphabet>/<character>/<image>.png`, sorted."""
    pngs = [n for n in archive.names if n.lower().endswith(".png")]
    by_root: dict[str, list[tuple[str, str, str]]] = {}
    for name in pngs:
        parts = name.split("/")
        if len(parts) >= 3:
            by_root.setdefault("/".join(parts[:-3]), []).append((name, parts[-3], parts[-2]))
    if not by_root:
        raise DataError(
            f"{archive.path} holds no images laid out as <Alphabet>/<character>/<image>.png "
            f"({len(pngs)} PNG file(s) at other depths); {OMNIGLOT_HELP}"
        )
    if len(by_root) > 1:
        roots = ", ".join(r or "." for r in sorted(by_root))
        raise DataError(
            f"{archive.path} holds Omniglot-like images under several roots ({roots}); give one of them"
        )
    (members,) = by_root.values()
    return sorted(members, key=lambda m: (m[1], m[2], m[0]))


def _decode_all(
    archive: Archive, members: list[tuple[str, str, str]], read: Callable[[str], bytes], image_size: int
) -> dict[str, np.ndarray]:
    class_ids: dict[tuple[str, str], int] = {}
    images = np.empty((len(members), image_size, image_size), dtype=np.uint8)  # [n, H, W], ink = 255
    labels = np.empty(len(members), dtype=np.int64)
    for i, (name, alphabet, character) in enumerate(members):
        images[i] = decode_image(read(name), image_size=image_size, where=archive.where(name))
        labels[i] = class_ids.setdefault((alphabet, character), len(class_ids))
    return {
        "images": images,
        "labels": labels,
        "classes": np.array([f"{a}/{c}" for a, c in class_ids], dtype=str),
        "class_alphabet": np.array([a for a, _ in class_ids], dtype=str),
    }


def _folder_names(root: Path) -> tuple[str, ...]:
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        rel = Path(dirpath).relative_to(root).as_posix()
        names.extend(f if rel == "." else f"{rel}/{f}" for f in filenames if _visible(f))
    return tuple(sorted(names))


def _visible(name: str) -> bool:
    return not any(part.startswith(".") or part == "__MACOSX" for part in name.split("/") if part)


def _bad_zip_message(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"cannot read {path} ({_one_line(exc)}); {what}"
    if head in _ZIP_MAGIC:
        return f"{path} is a damaged or truncated zip; download it again"
    return f"{path} is not a zip file; {what}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({_one_line(exc)}); {OMNIGLOT_HELP}") from None
    return h.hexdigest()


def _sha256_blobs(blobs: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(blobs):
        data = blobs[name]
        h.update(os.fsencode(name) + f"\0{len(data)}\0".encode())  # a name as the file system's bytes
        h.update(data)
    return h.hexdigest()


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not (
            MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise DataError(f"image size {image_size!r} is out of range; use a whole number of pixels, "
                        f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# Omniglot minimal protocol: meta-test on the small2 alphabets that small1 lacks.
MINIMAL_SMALL1 = "images_background_small1.zip"
MINIMAL_SMALL2 = "images_background_small2.zip"
MINIMAL_VAL_EVERY = 5  # every 5th character of each small1 alphabet is held out for validation


@register_source("omniglot", options=InkOptions, kind="images", path=True, backbone="conv4",
                 help="an Omniglot background zip (read in place) or its extracted folder")
def omniglot_source(arg: str, options: InkOptions, *, progress: bool = True) -> ImageSource:
    """`omniglot:PATH`: one Omniglot set, split by alphabet."""
    ds = load_omniglot(Path(arg).expanduser(), image_size=options.image_size)
    splits = split_by_alphabet(ds, options.split_fractions, options.split_seed)
    return ImageSource(f"omniglot:{arg}", splits, ink_preprocessing(options.image_size))


@register_source("omniglot-minimal", options=InkOptions, kind="images", path=None, backbone="conv4",
                 help="the Omniglot challenge's minimal protocol: meta-train on small1 (some characters held out "
                      "for validation), meta-test on the small2 alphabets small1 lacks")
def omniglot_minimal_source(arg: str, options: InkOptions, *, progress: bool = True) -> ImageSource:
    """`omniglot-minimal:DIR`: the folder holding both background-small zips (or their folders)."""
    root = Path(arg or ".").expanduser()
    if not root.is_dir():
        raise DataError(
            f"omniglot-minimal:{arg}: {root} is not a folder; give the folder holding both background-small zips"
        )
    paths = []
    for name in (MINIMAL_SMALL1, MINIMAL_SMALL2):
        p = root / name
        if not p.exists() and (root / name[: -len(".zip")]).is_dir():
            p = root / name[: -len(".zip")]
        if not p.exists():
            raise DataError(f"omniglot-minimal:{arg}: {name} (or its extracted folder) is missing from {root}")
        paths.append(p)
    small1 = load_omniglot(paths[0], image_size=options.image_size)
    small2 = load_omniglot(paths[1], image_size=options.image_size)
    test_alphabets = [a for a in small2.alphabets if a not in set(small1.alphabets)]
    val_ids = [i for i, c in enumerate(small1.classes) if _char_number(c) % MINIMAL_VAL_EVERY == 0]
    train_ids = [i for i in range(small1.num_classes) if i not in set(val_ids)]
    splits = {
        "train": small1.subset_classes(train_ids, "omniglot-minimal[train]"),
        "val": small1.subset_classes(val_ids, "omniglot-minimal[val]"),
        "test": small2.subset_alphabets(test_alphabets, "omniglot-minimal[test]"),
    }
    splits["all"] = small1
    return ImageSource(f"omniglot-minimal:{arg}", splits, ink_preprocessing(options.image_size))


def _char_number(class_name: str) -> int:
    digits = "".join(ch for ch in class_name.rsplit("/", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0
