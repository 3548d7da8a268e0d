"""Image folders as data sources: `folder:PATH` (class folders, optionally grouped, optionally split)
and `csvsplit:PATH` (mini-ImageNet's layout: images plus train/val/test CSV files).

`folder:PATH` layouts, found by where the images sit:

    PATH/<class>/<image>                    flat (torchvision's ImageFolder)
    PATH/<group>/<class>/<image>            grouped (Omniglot's alphabet/character): splits keep groups apart
    PATH/train|val|test/<...as above...>    explicit splits (val may be left out: it is then held out of train)

Without explicit splits the classes (or groups) are split by a seeded shuffle, cut by
`split_fractions` (fewbit.data.ImageOptions). Hidden files (`.x`, macOS `._x` forks, `__MACOSX`) are skipped
silently; other files that are not images, and images outside class folders, are skipped with a
warning that names them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.data.dataset import ImageDataset
from fewbit.data.image_store import ImageStore, decode_store
from fewbit.data.options import ImageOptions
from fewbit.data.registry import register_source
from fewbit.data.sources import ImageSource
from fewbit.data.splits import hold_out, split_classes
from fewbit.errors import DataError
from fewbit.runtime.images import is_skipped_entry
from fewbit.runtime.preprocess import ImagePreprocessing, is_image_name
from fewbit.runtime.tables import csv_rows

SPLIT_NAMES = ("train", "val", "test")
MAX_FILES = 5_000_000  # a data folder listing more files than this is refused before anything is read
MAX_DEPTH = 8
MAX_CSV_BYTES = 512 << 20


@dataclasses.dataclass(frozen=True)
class FolderData:
    """The splits of an image folder, the preprocessing they were decoded with, and notes for `data info`."""

    splits: dict[str, ImageDataset]
    preprocessing: ImagePreprocessing
    notes: dict[str, Any]


# ------------------------------------------------------------------------------------------ listing


@dataclasses.dataclass
class _Listing:
    files: list[str]  # image files, relative POSIX paths
    ignored: list[str]  # non-image files (hidden ones are not listed)


def list_files(root: Path) -> _Listing:
    """Every visible file under `root` (links followed once; loops and non-regular files left out)."""
    files, ignored = [], []
    seen: set[tuple[int, int]] = set()
    stack = [(root, "", 0)]
    count = 0
    while stack:
        folder, rel, depth = stack.pop()
        try:
            info = os.stat(folder)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue  # a link back up the tree
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot list {folder} ({exc.strerror or exc})") from None
        for entry in entries:
            name = entry.name
            if is_skipped_entry(name):
                continue
            path = f"{rel}{name}"
            try:
                mode = os.stat(entry.path).st_mode  # follows links
            except OSError:
                ignored.append(path + " (broken link)")
                continue
            if stat.S_ISDIR(mode):
                if depth + 1 > MAX_DEPTH:
                    ignored.append(path + "/ (nested too deep)")
                else:
                    stack.append((Path(entry.path), path + "/", depth + 1))
            elif not stat.S_ISREG(mode):
                ignored.append(path + " (not a regular file)")
            elif is_image_name(name):
                files.append(path)
            else:
                ignored.append(path)
            count += 1
            if count > MAX_FILES:
                raise DataError(f"{root} holds more than {MAX_FILES:,} files; point fewbit at the data folder itself")
    files.sort()
    return _Listing(files, sorted(ignored))


@dataclasses.dataclass
class _Tree:
    """Images of one tree by class: class name -> (group, [relative files])."""

    classes: dict[str, tuple[str, list[str]]]
    grouped: bool
    loose: list[str]


def _tree(files: Sequence[str], prefix: str, where: str) -> _Tree:
    """Group the image files below `prefix` by their class folder (depth 1: flat, depth 2: grouped)."""
    by_depth: dict[int, list[str]] = {}
    loose = []
    for f in files:
        rel = f[len(prefix) :]
        depth = rel.count("/")
        if depth == 0 or depth > 2:
            loose.append(f)
        else:
            by_depth.setdefault(depth, []).append(f)
    if not by_depth:
        raise DataError(
            f"{where} has no class folders with images; put each class's images in a folder of its own "
            f"(<class>/<image>, or <group>/<class>/<image>)"
        )
    if len(by_depth) == 2:
        flat_example, grouped_example = by_depth[1][0], by_depth[2][0]
        raise DataError(
            f"{where} mixes <class>/<image> ({flat_example}) and <group>/<class>/<image> ({grouped_example}); "
            f"use one layout"
        )
    ((depth, members),) = by_depth.items()
    classes: dict[str, tuple[str, list[str]]] = {}
    for f in members:
        parts = f[len(prefix) :].split("/")
        group = parts[0] if depth == 2 else ""
        name = "/".join(parts[:-1])
        classes.setdefault(name, (group, []))[1].append(f)
    return _Tree(classes, depth == 2, loose)


# ------------------------------------------------------------------------------------------- folder


def _rule(options: ImageOptions) -> ImagePreprocessing:
    """How `options` decode a file (RGB until the channels are detected)."""
    return ImagePreprocessing(image_size=options.image_size, channels=options.channels or 3, invert=options.invert,
                              resize=options.resize, resample="lanczos")


def load_folder(root: Path, options: ImageOptions, *, progress: bool = True) -> FolderData:
    """The splits of the image folder `root` (see the module docstring)."""
    root = Path(root).expanduser()
    _check_root(root, "folder")
    listing = list_files(root)
    top = {f.split("/", 1)[0] for f in listing.files if "/" in f}
    explicit = [s for s in SPLIT_NAMES if s in top]
    notes: dict[str, Any] = {"layout": "", "split_rule": "", "ignored_files": len(listing.ignored)}
    trees: dict[str, _Tree] = {}
    if explicit:
        for needed in ("train", "test"):
            if needed not in explicit:
                raise DataError(
                    f"{root} has {'/'.join(explicit)}/ folders but no {needed}/; give train/ and test/ "
                    f"(val/ is optional) or no split folders at all"
                )
        others = sorted(t for t in top if t not in SPLIT_NAMES)
        listing.ignored += [f"{t}/ (not a split folder)" for t in others]
        for split in explicit:
            trees[split] = _tree([f for f in listing.files if f.startswith(split + "/")], split + "/",
                                 f"{root}/{split}")
        grouped = trees["train"].grouped
        notes["layout"] = f"explicit splits ({', '.join(explicit)}), {'grouped' if grouped else 'flat'}"
    else:
        trees["all"] = _tree(listing.files, "", str(root))
        notes["layout"] = "grouped (<group>/<class>/<image>)" if trees["all"].grouped else "flat (<class>/<image>)"
    loose = [f for t in trees.values() for f in t.loose]
    _warn_skipped(root, listing.ignored, loose)
    notes["ignored_files"] = len(listing.ignored) + len(loose)
    # One store for every image of every split, in sorted class order.
    order: list[tuple[str, str, str, str]] = []  # (split, class, group, file)
    for split, tree in trees.items():
        for cls in sorted(tree.classes):
            group, members = tree.classes[cls]
            order += [(split, cls, group, f) for f in sorted(members)]
    store = decode_store(root, [o[3] for o in order], _rule(options),
                         detect_channels=options.channels is None, label=f"folder:{root}", progress=progress)
    base = _dataset_from(store, order, f"folder:{root.name}")
    fractions, seed = options.split_fractions, options.split_seed
    if explicit:
        splits = {s: base.subset_classes([i for i, c in enumerate(base.classes) if c.startswith(s + "/")],
                                         f"{base.name}[{s}]") for s in explicit}
        if "val" not in splits:
            splits["train"], splits["val"] = hold_out(splits["train"], fractions[1] / sum(fractions), seed)
            notes["split_rule"] = f"explicit train/test; val held out of train (seed {seed})"
        else:
            notes["split_rule"] = "explicit train/val/test folders"
        splits["all"] = base
    else:
        splits = split_classes(base, fractions, seed)
        kind = "group" if trees["all"].grouped else "class"
        notes["split_rule"] = (f"seeded {kind}-disjoint split, fractions {fractions[0]:g}/"
                               f"{fractions[1]:g}/{1 - sum(fractions):g} (seed {seed})")
    return _finish(splits, store, options, notes)


def _finish(
    splits: dict[str, ImageDataset], store: ImageStore, options: ImageOptions, notes: dict[str, Any]
) -> FolderData:
    """Normalise every split with the training split's statistics and record the preprocessing."""
    pre = _rule(options).replace(channels=store.channels)
    if options.normalize:
        train = splits["train"]
        mean, std = store.channel_stats(train.rows if train.rows is not None else np.arange(train.num_images))
        pre = pre.replace(mean=mean, std=std)
    else:
        pre = pre.replace(mean=(0.0,), std=(1.0,))
    splits = {k: v.with_normalization(pre.mean, pre.std) for k, v in splits.items()}
    notes["unreadable_images"] = len(store.errors)
    return FolderData(splits, pre, notes)


def _dataset_from(store: ImageStore, order: Sequence[tuple[str, str, str, str]], name: str) -> ImageDataset:
    """The decoded images as one dataset (files that did not decode left out)."""
    class_ids: dict[tuple[str, str], int] = {}
    groups: list[str] = []
    labels, rows = [], []
    for row, (split, cls, group, _) in enumerate(order):
        if not store.ok[row]:
            continue
        key = (split, cls)
        if key not in class_ids:
            class_ids[key] = len(class_ids)
            groups.append(f"{split}/{group}" if split != "all" and group else group)
        labels.append(class_ids[key])
        rows.append(row)
    if not class_ids:
        raise DataError(f"{name}: no image could be read")
    classes = tuple(c if s == "all" else f"{s}/{c}" for s, c in class_ids)
    return ImageDataset(name, store.pixels, np.asarray(labels, np.int64), classes, tuple(groups),
                        rows=np.asarray(rows, np.int64))


# ----------------------------------------------------------------------------------------- csvsplit


def load_csvsplit(root: Path, options: ImageOptions, *, progress: bool = True) -> FolderData:
    """mini-ImageNet's layout: `root/{train,val,test}.csv` of `filename,label` rows, images in
    `root/images/` (or `root/` itself)."""
    root = Path(root).expanduser()
    _check_root(root, "csvsplit")
    image_dir = root / "images" if (root / "images").is_dir() else root
    rows: dict[str, list[tuple[str, str]]] = {}
    for split in SPLIT_NAMES:
        path = root / f"{split}.csv"
        if not path.exists():
            if split == "val":
                continue
            raise DataError(f"csvsplit:{root}: {path.name} is missing; csvsplit needs train.csv and test.csv "
                            f"(and val.csv) of filename,label rows")
        rows[split] = _read_split_csv(path, image_dir)
    _drop_duplicates(root, rows)
    overlap = {r.label for r in rows["train"]} & {r.label for r in rows["test"]}
    if overlap:
        warnings.warn(f"csvsplit:{root}: {len(overlap)} label(s) appear in both train.csv and test.csv "
                      f"(e.g. {sorted(overlap)[0]}); few-shot test classes are usually unseen", stacklevel=3)
    order = [(split, r.label, "", r.name) for split in rows for r in sorted(rows[split], key=lambda r: r.label)]
    # classes in sorted order within each split, files in CSV order within each class
    order.sort(key=lambda o: (SPLIT_NAMES.index(o[0]), o[1]))
    rel = [os.path.relpath(image_dir / o[3], root) for o in order]
    store = decode_store(root, rel, _rule(options), detect_channels=options.channels is None,
                         label=f"csvsplit:{root}", progress=progress)
    base = _dataset_from(store, order, f"csvsplit:{root.name}")
    splits = {s: base.subset_classes([i for i, c in enumerate(base.classes) if c.startswith(s + "/")],
                                     f"{base.name}[{s}]") for s in rows}
    notes: dict[str, Any] = {"layout": f"csvsplit ({', '.join(f'{s}.csv' for s in rows)})"}
    if "val" not in splits:
        fractions, seed = options.split_fractions, options.split_seed
        splits["train"], splits["val"] = hold_out(splits["train"], fractions[1] / sum(fractions), seed)
        notes["split_rule"] = f"train.csv/test.csv; val held out of train (seed {seed})"
    else:
        notes["split_rule"] = "train.csv / val.csv / test.csv"
    splits["all"] = base
    notes["ignored_files"] = 0
    return _finish(splits, store, options, notes)


@dataclasses.dataclass(frozen=True, slots=True)
class _SplitRow:
    """One `filename,label` row of a split CSV, with the image file it names (resolved) and its line."""

    name: str
    label: str
    target: str
    line: int


def _read_split_csv(path: Path, image_dir: Path) -> list[_SplitRow]:
    """The rows of one split CSV; a header row `filename,label` is optional."""
    out = []
    first = True
    inside = image_dir.resolve()
    for line_no, row in csv_rows(path, MAX_CSV_BYTES, "save it as a UTF-8 CSV of filename,label rows"):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise DataError(f"{path} line {line_no}: expected filename,label, got {','.join(row)[:80]!r}")
        name, label = row[0].strip(), row[1].strip()
        if first and name.lower() in ("filename", "file", "image", "path") and label.lower() in (
            "label", "class", "category"
        ):
            first = False
            continue
        first = False
        if not name or not label:
            raise DataError(f"{path} line {line_no}: empty file name or label")
        if "\0" in name:
            raise DataError(f"{path} line {line_no}: the file name {name[:80]!r} holds a NUL character, "
                            f"which no file name can; fix the CSV")
        try:
            target = (image_dir / name).resolve()
            found = target.is_file()
        except OSError as exc:
            raise DataError(f"{path} line {line_no}: cannot look up {name[:80]} in {image_dir} "
                            f"({exc.strerror or exc}); fix the CSV") from None
        if not found:
            raise DataError(f"{path} line {line_no}: {name} is not in {image_dir}; put the images there "
                            f"(or fix the CSV)")
        if inside not in target.parents:
            raise DataError(f"{path} line {line_no}: {name} points outside {image_dir}")
        out.append(_SplitRow(name, label, str(target), line_no))
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def _drop_duplicates(root: Path, rows: dict[str, list[_SplitRow]]) -> None:
    """Keep the first row naming each image file (train, then val, then test; CSV order within one),
    warning about the others: one file is one image, never the support and query of one task."""
    first_seen: dict[str, str] = {}
    dropped = []
    for split, split_rows in rows.items():
        kept = []
        for row in split_rows:
            where = f"{split}.csv line {row.line}"
            if row.target in first_seen:
                dropped.append(f"{where} ({row.name}; first at {first_seen[row.target]})")
            else:
                first_seen[row.target] = where
                kept.append(row)
        if not kept:
            raise DataError(f"csvsplit:{root}: every image {split}.csv lists is listed earlier "
                            f"(e.g. {dropped[-1]}); list each image once")
        rows[split] = kept
    if dropped:
        shown = ", ".join(dropped[:3]) + (f" and {len(dropped) - 3} more" if len(dropped) > 3 else "")
        warnings.warn(f"csvsplit:{root}: dropped {len(dropped)} row(s) naming an image listed before: {shown}",
                      stacklevel=3)


# ------------------------------------------------------------------------------------------ helpers


def _check_root(root: Path, kind: str) -> None:
    if not root.exists():
        raise DataError(f"{kind}:{root}: {root} does not exist; give the folder holding your images")
    if not root.is_dir():
        raise DataError(f"{kind}:{root}: {root} is not a folder; give the folder holding your images")


def _warn_skipped(root: Path, ignored: list[str], loose: list[str]) -> None:
    for what, names in (("file(s) that are not images", ignored), ("image(s) outside class folders", loose)):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            warnings.warn(f"folder:{root}: skipped {len(names)} {what}: {shown}", stacklevel=3)


# A user's own images train with augmentation chosen by their channels, small steps (4 tasks of 5
# queries a class: a class of 6 images is enough, and a step is cheap) and until validation stops
# rising. Measured on generated photos: benchmarks/own_photos.py.
OWN_IMAGES_TRAINING = {"augment": "auto", "steps": "auto", "meta_batch": 4, "queries": 5}


@register_source("folder", options=ImageOptions, kind="images", path=True, backbone="conv4",
                 train_defaults=OWN_IMAGES_TRAINING,
                 help="your images: PATH/<class>/<image>, PATH/<group>/<class>/<image>, or either under "
                      "train/, val/, test/")
def folder_source(arg: str, options: ImageOptions, *, progress: bool = True) -> ImageSource:
    """`folder:PATH`: a user's image folder."""
    data = load_folder(Path(arg), options, progress=progress)
    return ImageSource(f"folder:{arg}", data.splits, data.preprocessing, data.notes)


@register_source("csvsplit", options=ImageOptions, kind="images", path=True, backbone="conv4",
                 train_defaults=OWN_IMAGES_TRAINING,
                 help="mini-ImageNet's layout: images plus train.csv, val.csv, test.csv of filename,label rows")
def csvsplit_source(arg: str, options: ImageOptions, *, progress: bool = True) -> ImageSource:
    """`csvsplit:PATH`: images listed by split CSVs."""
    data = load_csvsplit(Path(arg), options, progress=progress)
    return ImageSource(f"csvsplit:{arg}", data.splits, data.preprocessing, data.notes)
