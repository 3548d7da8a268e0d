"""Class-disjoint splits of a dataset: by group (alphabet) when its classes have groups, else by class.

Seeded shuffles of sorted names, cut by fractions, so the same data, fractions and seed give the
same splits everywhere (`omniglot:` and `folder:` of the same files split alike).
"""

from __future__ import annotations

import random

from fewbit.data.dataset import ImageDataset
from fewbit.errors import DataError


def split_by_alphabet(
    ds: ImageDataset, fractions: tuple[float, float] = (0.6, 0.2), seed: int = 0
) -> dict[str, ImageDataset]:
    """Alphabet-disjoint train/val/test splits: a seeded shuffle of the sorted alphabets, cut by fraction."""
    alphabets = sorted(ds.alphabets)
    if len(alphabets) < 3:
        raise DataError(f"{ds.name}: {len(alphabets)} group(s) (alphabets) cannot make group-disjoint train/val/test "
                        f"splits; use at least 3 groups, explicit train/val/test folders, or a flat <class>/<image> "
                        f"layout")
    random.Random(seed).shuffle(alphabets)
    n_train, n_val = cut_sizes(len(alphabets), fractions)
    parts = {
        "train": alphabets[:n_train],
        "val": alphabets[n_train : n_train + n_val],
        "test": alphabets[n_train + n_val :],
    }
    out = {name: ds.subset_alphabets(sorted(a), f"{ds.name}[{name}]") for name, a in parts.items()}
    out["all"] = ds
    return out


def split_classes(ds: ImageDataset, fractions: tuple[float, float], seed: int) -> dict[str, ImageDataset]:
    """Seeded train/val/test splits: group-disjoint when the classes have groups, else class-disjoint."""
    if any(ds.class_alphabet):
        return split_by_alphabet(ds, fractions, seed)
    names = sorted(range(ds.num_classes), key=lambda i: ds.classes[i])
    if len(names) < 3:
        raise DataError(f"{ds.name}: {len(names)} class(es) cannot make class-disjoint train/val/test splits; "
                        f"give at least 3 classes")
    random.Random(seed).shuffle(names)
    n_train, n_val = cut_sizes(len(names), fractions)
    parts = {"train": names[:n_train], "val": names[n_train : n_train + n_val], "test": names[n_train + n_val :]}
    out = {k: ds.subset_classes(sorted(v), f"{ds.name}[{k}]") for k, v in parts.items()}
    out["all"] = ds
    return out


def hold_out(ds: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """(the rest, the held-out part) of `ds`: a seeded `fraction` of its groups (or classes)."""
    keys = sorted(set(ds.class_alphabet)) if any(ds.class_alphabet) else sorted(ds.classes)
    if len(keys) < 2:
        raise DataError(f"{ds.name}: {len(keys)} class(es) cannot give a validation split; add a val/ folder")
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, min(len(keys) - 1, round(len(keys) * fraction)))])
    by = ds.class_alphabet if any(ds.class_alphabet) else ds.classes
    rest = [i for i, k in enumerate(by) if k not in held]
    val = [i for i, k in enumerate(by) if k in held]
    return ds.subset_classes(rest, f"{ds.name}[train]"), ds.subset_classes(val, ds.name.replace("[train]", "[val]"))


def cut_sizes(n: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """(train, val) counts of `n` items cut by `fractions`, each split keeping at least one (n >= 3)."""
    n_train = min(max(1, round(n * fractions[0])), n - 2)
    n_val = min(max(1, round(n * fractions[1])), n - n_train - 1)
    return n_train, n_val
