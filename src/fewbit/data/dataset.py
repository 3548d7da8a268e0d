"""ImageDataset: images grouped into classes, each class belonging to a group (an alphabet)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fewbit.data.augment import augment, resolve
from fewbit.errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images of a set of classes, greyscale or colour, stored as uint8 and normalised when drawn.

    `pixels` is uint8 `[N, C, H, W]` (a 3-d `[N, H, W]` array is taken as one channel). It may be a
    read-only memory map shared by every split of a source: a split is the `rows` of `pixels` it
    holds, so splitting copies no pixels. `labels[i]` is the class of row `rows[i]`;
    `class_alphabet[c]` is class c's group (Omniglot's alphabet, a folder's top level).
    Drawn images (`tensor`) are `x / 255`, then `(x - mean[c]) / std[c]` per channel. For ink data
    (Omniglot, glyphs) ink is 255 on 0 and `mean`/`std` are 0/1, so strokes are 1 on 0.
    """

    name: str
    pixels: np.ndarray  # [N, C, H, W] uint8
    labels: np.ndarray  # [n] int64 in 0..len(classes)-1
    classes: tuple[str, ...]
    class_alphabet: tuple[str, ...]
    rows: np.ndarray | None = None  # [n] int64 rows of `pixels` (None: every row, in order)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        pixels = self.pixels
        if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4):
            raise DataError(f"{self.name}: images must be uint8 [n, C, H, W], got {pixels.dtype} {pixels.shape}")
        if pixels.ndim == 3:
            object.__setattr__(self, "pixels", pixels[:, None])
        rows = self.rows
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.pixels.shape[0])):
                raise DataError(f"{self.name}: rows must index the {self.pixels.shape[0]} stored images")
            object.__setattr__(self, "rows", rows)
        if self.labels.shape != (self.num_images,):
            raise DataError(f"{self.name}: {self.labels.shape[0]} labels for {self.num_images} images")
        if len(self.classes) != len(self.class_alphabet):
            raise DataError(f"{self.name}: {len(self.classes)} classes but {len(self.class_alphabet)} alphabets")
        channels = self.channels
        for field in ("mean", "std"):
            values = tuple(float(v) for v in np.atleast_1d(getattr(self, field)))
            values = values * channels if len(values) == 1 else values
            if len(values) != channels:
                raise DataError(f"{self.name}: {field} needs 1 or {channels} values, got {len(values)}")
            object.__setattr__(self, field, values)
        if not all(s > 0 for s in self.std):
            raise DataError(f"{self.name}: std must be > 0, got {list(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_images(self) -> int:
        return int(self.pixels.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """`(C, H, W)` of one drawn image."""
        return (self.channels, *self.image_size)

    @property
    def images(self) -> np.ndarray:
        """This dataset's images, uint8 `[n, C, H, W]` (a copy for a split of a larger store)."""
        return self.pixels if self.rows is None else self.pixels[self.rows]

    @property
    def alphabets(self) -> tuple[str, ...]:
        """The groups (alphabets) present, in first-seen order."""
        return tuple(dict.fromkeys(self.class_alphabet))

    def take(self, index: np.ndarray) -> np.ndarray:
        """uint8 `[len(index), C, H, W]` of images `index` (positions in this dataset)."""
        index = np.asarray(index, dtype=np.int64)
        return self.pixels[index if self.rows is None else self.rows[index]]

    def tensor(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 `[len(index), C, H, W]` of images `index`, scaled to [0, 1] and normalised."""
        return self.normalize(self.scaled(index))

    def scaled(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 `[len(index), C, H, W]` in [0, 1] (before normalisation; augmentation works here)."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(np.ascontiguousarray(self.take(index))).to(torch.float32).div_(255.0)

    rotatable = True  # a square image turned by 90 degrees is a new class (`rotations`, test-time views)

    def augment_recipe(self, recipe: str) -> str:
        """The augmentation `recipe` (see `fewbit.data.augment`) resolved for these images: `auto`
        is photo for colour, glyph for greyscale."""
        return resolve(recipe, self.channels)

    def augmented(self, index: np.ndarray | torch.Tensor, recipe: str, generator: torch.Generator) -> torch.Tensor:
        """Like `tensor`, each image warped by the resolved `recipe` with `generator`."""
        return self.normalize(augment(self.scaled(index), recipe, generator))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """`(x - mean) / std` per channel of `x [..., C, H, W]` (nothing when mean 0 and std 1)."""
        if all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std):
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def images_per_class(self) -> np.ndarray:
        """Count of images in each class, `[num_classes]`."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def smallest_class(self) -> tuple[str, int]:
        """(name, image count) of the class with the fewest images."""
        per_class = self.images_per_class()
        if not per_class.size:
            return "", 0
        c = int(per_class.argmin())
        return self.classes[c], int(per_class[c])

    def subset_classes(self, class_ids: Sequence[int], name: str | None = None) -> ImageDataset:
        """A dataset holding only `class_ids`, relabelled 0..len-1 in the given order (no pixels copied)."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        keep = np.flatnonzero(remap[self.labels] >= 0)
        rows = keep if self.rows is None else self.rows[keep]
        return dataclasses.replace(
            self,
            name=name or self.name,
            labels=remap[self.labels[keep]],
            classes=tuple(self.classes[i] for i in class_ids),
            class_alphabet=tuple(self.class_alphabet[i] for i in class_ids),
            rows=rows,
        )

    def subset_alphabets(self, alphabets: Sequence[str], name: str | None = None) -> ImageDataset:
        """A dataset holding only the classes of `alphabets`."""
        wanted = set(alphabets)
        missing = wanted - set(self.alphabets)
        if missing:
            raise DataError(f"{self.name}: no alphabet(s) {', '.join(sorted(missing))}")
        ids = [i for i, a in enumerate(self.class_alphabet) if a in wanted]
        return self.subset_classes(ids, name)

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> ImageDataset:
        """The same images drawn with another per-channel normalisation."""
        return dataclasses.replace(self, mean=tuple(mean), std=tuple(std))

    def prepared_as(self, preprocessing: Any) -> ImageDataset:
        """The same images drawn the way `preprocessing` (a trained model's) normalises them;
        DataError when the model takes another input shape."""
        if tuple(self.input_shape) != tuple(preprocessing.input_shape):
            raise DataError(f"{self.name}: its inputs are {list(self.input_shape)}, the model takes "
                            f"{list(preprocessing.input_shape)}")
        return self.with_normalization(preprocessing.mean, preprocessing.std)

    def info(self) -> dict[str, object]:
        """Counts a user wants to see: groups (alphabets), classes, images, channels, image size."""
        per_class = self.images_per_class()
        return {
            "name": self.name,
            "alphabets": len(self.alphabets),
            "groups": len([a for a in self.alphabets if a]),  # a flat folder's classes have no group
            "classes": self.num_classes,
            "images": self.num_images,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "images_per_class_min": int(per_class.min()) if per_class.size else 0,
            "alphabet_names": list(self.alphabets),
        }


def concat(datasets: Sequence[ImageDataset], name: str) -> ImageDataset:
    """One dataset with the classes of all `datasets` (class names must not collide).

    Splits of one source share their `pixels`: joining them (train + val) copies no pixels.
    """
    classes = [c for ds in datasets for c in ds.classes]
    if len(set(classes)) != len(classes):
        raise DataError(f"{name}: class names collide when joining {', '.join(d.name for d in datasets)}")
    offsets = np.cumsum([0] + [ds.num_classes for ds in datasets[:-1]])
    labels = np.concatenate([ds.labels + offset for ds, offset in zip(datasets, offsets, strict=True)])
    alphabets = tuple(a for ds in datasets for a in ds.class_alphabet)
    first = datasets[0]
    if all(ds.pixels is first.pixels for ds in datasets):
        rows = np.concatenate([np.arange(ds.num_images) if ds.rows is None else ds.rows for ds in datasets])
        return dataclasses.replace(first, name=name, labels=labels, classes=tuple(classes),
                                   class_alphabet=alphabets, rows=rows)
    pixels = np.concatenate([ds.pixels if ds.rows is None else ds.pixels[ds.rows] for ds in datasets])
    return ImageDataset(name, pixels, labels, tuple(classes), alphabets, mean=first.mean, std=first.std)
