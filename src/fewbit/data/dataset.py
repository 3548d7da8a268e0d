"""ImageDataset: images grouped into classes, each class belonging to an alphabet."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fewbit.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """Greyscale images of a set of classes.

    `images` is uint8 `[n, H, W]` with 255 where there is ink (strokes = 1 once scaled),
    `labels` is int64 `[n]` indexing `classes`; `class_alphabet[c]` is class c's alphabet.
    """

    name: str
    images: np.ndarray  # [n, H, W] uint8, ink = 255
    labels: np.ndarray  # [n] int64 in 0..len(classes)-1
    classes: tuple[str, ...]
    class_alphabet: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be uint8 [n, H, W], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images")
        if len(self.classes) != len(self.class_alphabet):
            raise DataError(f"{self.name}: {len(self.classes)} classes but {len(self.class_alphabet)} alphabets")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def alphabets(self) -> tuple[str, ...]:
        """The alphabets present, in first-seen order."""
        return tuple(dict.fromkeys(self.class_alphabet))

    def images_per_class(self) -> np.ndarray:
        """Count of images in each class, `[num_classes]`."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset_classes(self, class_ids: Sequence[int], name: str | None = None) -> ImageDataset:
        """A dataset holding only `class_ids`, relabelled 0..len-1 in the given order."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        keep = remap[self.labels] >= 0
        return ImageDataset(
            name=name or self.name,
            images=self.images[keep],
            labels=remap[self.labels[keep]],
            classes=tuple(self.classes[i] for i in class_ids),
            class_alphabet=tuple(self.class_alphabet[i] for i in class_ids),
        )

    def subset_alphabets(self, alphabets: Sequence[str], name: str | None = None) -> ImageDataset:
        """A dataset holding only the classes of `alphabets`."""
        wanted = set(alphabets)
        missing = wanted - set(self.alphabets)
        if missing:
            raise DataError(f"{self.name}: no alphabet(s) {', '.join(sorted(missing))}")
        ids = [i for i, a in enumerate(self.class_alphabet) if a in wanted]
        return self.subset_classes(ids, name)

    def info(self) -> dict[str, object]:
        """Counts a user wants to see: alphabets, classes, images, image size."""
        per_class = self.images_per_class()
        return {
            "name": self.name,
            "alphabets": len(self.alphabets),
            "classes": self.num_classes,
            "images": self.num_images,
            "image_size": list(self.image_size),
            "images_per_class_min": int(per_class.min()) if per_class.size else 0,
            "alphabet_names": list(self.alphabets),
        }


def concat(datasets: Sequence[ImageDataset], name: str) -> ImageDataset:
    """One dataset with the classes of all `datasets` (class names must not collide)."""
    images, labels, classes, alphabets = [], [], [], []
    offset = 0
    for ds in datasets:
        images.append(ds.images)
        labels.append(ds.labels + offset)
        classes.extend(ds.classes)
        alphabets.extend(ds.class_alphabet)
        offset += ds.num_classes
    if len(set(classes)) != len(classes):
        raise DataError(f"{name}: class names collide when joining {', '.join(d.name for d in datasets)}")
    return ImageDataset(name, np.concatenate(images), np.concatenate(labels), tuple(classes), tuple(alphabets))
