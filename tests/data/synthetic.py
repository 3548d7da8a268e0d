"""A small synthetic ImageDataset for unit tests: each class is a fixed random pattern plus noise."""

from __future__ import annotations

import numpy as np

from fewbit.data.dataset import ImageDataset


def synthetic_dataset(
    alphabets: int = 4, classes_per_alphabet: int = 6, per_class: int = 8, size: int = 12, seed: int = 0
) -> ImageDataset:
    rng = np.random.default_rng(seed)
    n_classes = alphabets * classes_per_alphabet
    patterns = rng.random((n_classes, size, size)) > 0.6
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            flip = rng.random((size, size)) < 0.03
            images.append(((patterns[c] ^ flip) * 255).astype(np.uint8))
            labels.append(c)
    classes = tuple(f"A{c // classes_per_alphabet}/char{c % classes_per_alphabet:02d}" for c in range(n_classes))
    alpha = tuple(f"A{c // classes_per_alphabet}" for c in range(n_classes))
    return ImageDataset("synthetic", np.stack(images), np.asarray(labels, dtype=np.int64), classes, alpha)
