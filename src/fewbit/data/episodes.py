"""Seeded N-way K-shot Q-query episode sampling from an ImageDataset (or a TableDataset)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fewbit.data.task import Task
from fewbit.errors import ConfigError, DataError


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `[n, H, W]` or `[n, C, H, W]` (ink = 255) to float `[n, C, H, W]` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return x.unsqueeze(1) if x.dim() == 3 else x


class EpisodeSampler:
    """Draws N-way K-shot Q-query tasks from `dataset` with an explicit `torch.Generator`.

    Labels are 0..N-1 assigned in a random order per task. With `rotations=True` each class
    rotated by 0/90/180/270 degrees counts as a class of its own (standard Omniglot practice).
    `augment` (none, auto, photo, glyph: see `fewbit.data.augment`) warps every drawn image with
    the same generator. `within_group=True` draws each task's classes from one group (an
    Omniglot alphabet, a folder's top level), as harder within-alphabet tasks.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        ways: int,
        shots: int,
        queries: int,
        rotations: bool = False,
        augment: str = "none",
        within_group: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        for field, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"episodes.{field}: must be an integer >= {low}, got {value!r}")
        if rotations and not dataset.rotatable:
            raise ConfigError(f"episodes.rotations: {dataset.name} has no orientation to turn; rotations apply to "
                              "square images only")
        try:
            self.augment = dataset.augment_recipe(augment)
        except ValueError as exc:
            raise ConfigError(f"episodes.augment: {exc}") from None
        copies = 4 if rotations else 1
        num_classes = dataset.num_classes * copies
        if ways > num_classes:
            raise DataError(
                f"{ways}-way tasks need {ways} classes but {dataset.name} has {num_classes}; "
                f"lower --ways or give that split more classes (--split-fractions)"
            )
        smallest, fewest = dataset.smallest_class()
        noun = getattr(dataset, "unit", "image(s)")
        if shots + queries > fewest:
            raise DataError(
                f"shots + queries = {shots + queries} but class {smallest!r} of {dataset.name} has only {fewest} "
                f"{noun}; lower --shots or --queries, or give that class more {noun.rstrip('(s)')}s"
            )
        self.dataset = dataset
        self.ways, self.shots, self.queries, self.rotations = ways, shots, queries, rotations
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        per_class = dataset.images_per_class()
        order = np.argsort(dataset.labels, kind="stable")
        self._order = torch.from_numpy(order)
        self._starts = torch.from_numpy(np.concatenate([[0], np.cumsum(per_class)[:-1]]))
        self._counts = torch.from_numpy(per_class)
        self._num_virtual = num_classes
        self._groups: list[torch.Tensor] | None = None
        if within_group:
            members: dict[str, list[int]] = {}
            for c, group in enumerate(dataset.class_alphabet):
                members.setdefault(group, []).extend(c * copies + r for r in range(copies))
            groups = [torch.tensor(v) for _, v in sorted(members.items()) if len(v) >= ways]
            if not groups:
                raise DataError(f"{ways}-way tasks within one group need a group of {ways} classes; "
                                f"{dataset.name}'s largest has {max(len(v) for v in members.values())}")
            self._groups = groups

    def sample(self, tasks: int = 1) -> Task:
        """A meta-batch of `tasks` episodes (tensors with a leading `tasks` dimension)."""
        return self.sample_named(tasks)[0]

    def sample_named(self, tasks: int = 1) -> tuple[Task, list[list[str]]]:
        """`sample(tasks)` and, for each task, the names of the classes behind its labels 0..N-1
        (a rotated class as `NAME rot90`, ...); the same draws as `sample`."""
        n, k, q = self.ways, self.shots, self.queries
        names: list[list[str]] = []
        g = self.generator
        support_idx = torch.empty(tasks, n, k, dtype=torch.long)
        query_idx = torch.empty(tasks, n, q, dtype=torch.long)
        rot = torch.zeros(tasks, n, dtype=torch.long)
        for t in range(tasks):
            if self._groups is None:
                virtual = torch.randperm(self._num_virtual, generator=g)[:n]  # label i -> virtual[i]
            else:
                pool = self._groups[int(torch.randint(len(self._groups), (1,), generator=g))]
                virtual = pool[torch.randperm(len(pool), generator=g)[:n]]
            cls = virtual // 4 if self.rotations else virtual
            if self.rotations:
                rot[t] = virtual % 4
            names.append([self.dataset.classes[c] + (f" rot{90 * int(r)}" if self.rotations and int(r) else "")
                          for c, r in zip(cls.tolist(), rot[t].tolist())])
            for i, c in enumerate(cls.tolist()):
                pick = torch.randperm(int(self._counts[c]), generator=g)[: k + q] + self._starts[c]
                pick = self._order[pick]
                support_idx[t, i] = pick[:k]
                query_idx[t, i] = pick[k:]
        support_x = self._gather(support_idx, rot)  # [tasks, N*K, C, H, W] (tables: [tasks, N*K, F])
        query_x = self._gather(query_idx, rot)  # [tasks, N*Q, C, H, W]
        labels = torch.arange(n)
        support_y = labels.repeat_interleave(k).expand(tasks, -1).clone()  # [tasks, N*K]
        query_y = labels.repeat_interleave(q).expand(tasks, -1).clone()  # [tasks, N*Q]
        return Task(support_x, support_y, query_x, query_y, ways=n), names

    def _gather(self, idx: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        tasks, n, per = idx.shape
        flat = idx.reshape(-1)
        if self.augment == "none":
            x = self.dataset.tensor(flat)
        else:
            x = self.dataset.augmented(flat, self.augment, self.generator)
        shape = x.shape[1:]
        x = x.reshape(tasks, n, per, *shape)
        if self.rotations:
            for r in (1, 2, 3):
                sel = rot == r  # [tasks, n]
                if sel.any():
                    x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        return x.reshape(tasks, n * per, *shape)
