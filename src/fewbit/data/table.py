"""Tables as data sources: `csv:PATH`, rows of numeric features with a label column.

Tasks are N-way K-shot over the label values; the label values are split class-disjoint
(seeded, by `TableOptions.split_fractions`). Features are standardised with the training
split's mean and standard deviation, which the artifact carries to the runtime.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewbit.config import brief, check, setting
from fewbit.data.options import SplitOptions
from fewbit.data.registry import register_source
from fewbit.data.sources import TableSource
from fewbit.data.splits import cut_sizes
from fewbit.errors import DataError
from fewbit.runtime.preprocess import TablePreprocessing, standardize_rows
from fewbit.runtime.tables import FLOAT32_MAX, read_table


@dataclasses.dataclass(frozen=True, eq=False)
class TableDataset:
    """Rows of numeric features grouped into classes; drawn rows are standardised per feature.

    The same interface as `ImageDataset` where episodes need it (`labels`, `classes`, `take`,
    `tensor`, `subset_classes`, ...): an "image" here is a row.
    """

    name: str
    values: np.ndarray  # [N, F] float32, raw
    labels: np.ndarray  # [n] int64
    classes: tuple[str, ...]
    features: tuple[str, ...]
    rows: np.ndarray | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.features):
            raise DataError(f"{self.name}: values must be [n, {len(self.features)}], got {self.values.shape}")
        if self.labels.shape != (self.num_images,):
            raise DataError(f"{self.name}: {self.labels.shape[0]} labels for {self.num_images} rows")
        if not self.mean:
            object.__setattr__(self, "mean", (0.0,) * len(self.features))
            object.__setattr__(self, "std", (1.0,) * len(self.features))

    @property
    def class_alphabet(self) -> tuple[str, ...]:
        return ("",) * len(self.classes)

    @property
    def alphabets(self) -> tuple[str, ...]:
        return ("",) if self.classes else ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_images(self) -> int:
        return int(self.values.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.features),)

    @property
    def channels(self) -> None:
        return None

    rotatable = False  # a row has no orientation

    def augment_recipe(self, recipe: str) -> str:
        """Rows are not augmented: every recipe is none (a table has no pixels to warp)."""
        return "none"

    def augmented(self, index: np.ndarray | torch.Tensor, recipe: str, generator: torch.Generator) -> torch.Tensor:
        return self.tensor(index)

    def images_per_class(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def smallest_class(self) -> tuple[str, int]:
        per_class = self.images_per_class()
        if not per_class.size:
            return "", 0
        c = int(per_class.argmin())
        return self.classes[c], int(per_class[c])

    def take(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        return self.values[index if self.rows is None else self.rows[index]]

    def tensor(self, index: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 `[len(index), F]` standardised rows."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(standardize_rows(self.take(index), self.mean, self.std))

    def subset_classes(self, class_ids: Sequence[int], name: str | None = None) -> TableDataset:
        class_ids = np.asarray(class_ids, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        keep = np.flatnonzero(remap[self.labels] >= 0)
        return dataclasses.replace(self, name=name or self.name, labels=remap[self.labels[keep]],
                                   classes=tuple(self.classes[i] for i in class_ids),
                                   rows=keep if self.rows is None else self.rows[keep])

    def join(self, other: TableDataset, name: str) -> TableDataset:
        """This dataset's classes and `other`'s (a split of the same table), no rows copied."""
        if other.values is not self.values:
            raise DataError(f"{name}: only splits of one table can be joined")
        if set(self.classes) & set(other.classes):
            raise DataError(f"{name}: class names collide when joining {self.name} and {other.name}")
        rows = [np.arange(d.num_images) if d.rows is None else d.rows for d in (self, other)]
        labels = np.concatenate([self.labels, other.labels + self.num_classes])
        return dataclasses.replace(self, name=name, labels=labels, classes=self.classes + other.classes,
                                   rows=np.concatenate(rows))

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> TableDataset:
        return dataclasses.replace(self, mean=tuple(mean), std=tuple(std))

    def prepared_as(self, preprocessing: Any) -> TableDataset:
        """The same rows standardised the way `preprocessing` (a trained model's) says."""
        if tuple(self.input_shape) != tuple(preprocessing.input_shape):
            raise DataError(f"{self.name}: its inputs are {list(self.input_shape)}, the model takes "
                            f"{list(preprocessing.input_shape)}")
        return self.with_normalization(preprocessing.mean, preprocessing.std)

    def info(self) -> dict[str, object]:
        per_class = self.images_per_class()
        return {"name": self.name, "classes": self.num_classes, "images": self.num_images, "rows": self.num_images,
                "features": len(self.features), "channels": None,
                "images_per_class_min": int(per_class.min()) if per_class.size else 0}


def load_table_source(
    path: Path, *, label_column: str | None, fractions: tuple[float, float], seed: int
) -> tuple[dict[str, TableDataset], TablePreprocessing, dict[str, object]]:
    """(splits, preprocessing, notes) of the CSV table at `path`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"csv:{path}: {path} is not a file; give a CSV table with a label column")
    table = read_table(path, label_column=label_column)
    names = sorted(set(table.labels))
    if len(names) < 3:
        raise DataError(f"csv:{path}: {len(names)} label value(s) in {table.label_column!r}; class-disjoint "
                        f"train/val/test splits need at least 3 (is --label-column right?)")
    ids = {n: i for i, n in enumerate(names)}
    labels = np.array([ids[v] for v in table.labels], np.int64)
    base = TableDataset(f"csv:{path.name}", table.values.astype(np.float32), labels, tuple(names), table.features)
    order = list(range(len(names)))
    random.Random(seed).shuffle(order)
    n_train, n_val = cut_sizes(len(order), fractions)
    parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    splits = {k: base.subset_classes(sorted(v), f"{base.name}[{k}]") for k, v in parts.items()}
    splits["all"] = base
    train_rows = splits["train"].rows
    assert train_rows is not None
    train_values = base.values[train_rows].astype(np.float64)
    mean = train_values.mean(axis=0)
    std = np.maximum(train_values.std(axis=0), 1e-6)  # a constant column must not divide by zero
    # Every row is standardised with the training statistics into float32: it must stay finite there.
    reach = np.maximum(np.abs(base.values.max(axis=0) - mean), np.abs(base.values.min(axis=0) - mean)) / std
    far = np.flatnonzero(reach > FLOAT32_MAX)
    if far.size:
        name = table.features[int(far[0])]
        raise DataError(f"csv:{path}: column {name!r} holds values {reach[far[0]]:.3g} training standard "
                        f"deviations from its training mean, beyond float32's range once standardised; "
                        f"rescale or drop the column")
    pre = TablePreprocessing(features=table.features, mean=tuple(float(m) for m in mean),
                             std=tuple(float(s) for s in std), label_column=table.label_column)
    splits = {k: v.with_normalization(pre.mean, pre.std) for k, v in splits.items()}
    notes = {"layout": f"table, label column {table.label_column!r}, {len(table.features)} features",
             "split_rule": f"seeded class-disjoint split, fractions {fractions[0]:g}/{fractions[1]:g}/"
                           f"{1 - sum(fractions):g} (seed {seed})"}
    return splits, pre, notes


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableOptions(SplitOptions):
    """How a CSV table is read: its label column (None: the last) and the class split."""

    label_column: str | None = setting(None, "a csv: table's label column (default: the last)", metavar="NAME")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.label_column is None or (isinstance(self.label_column, str) and bool(self.label_column)),
              self.owner, "label_column", f"must be a column name or null, got {brief(self.label_column)}")

    def for_preprocessing(self, preprocessing: Any) -> TableOptions:
        return dataclasses.replace(self, label_column=preprocessing.label_column)


@register_source("csv", options=TableOptions, kind="table", path=True, backbone="mlp",
                 help="your table: numeric features and a label column (--label-column, default the last)")
def table_source(arg: str, options: TableOptions, *, progress: bool = True) -> TableSource:
    """`csv:PATH`: a CSV table's rows as examples of their label's class."""
    splits, pre, notes = load_table_source(Path(arg), label_column=options.label_column,
                                           fractions=options.split_fractions, seed=options.split_seed)
    return TableSource(f"csv:{arg}", splits, pre, notes)
