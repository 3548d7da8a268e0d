"""Seeded N-way K-shot Q-query episode sampling from an ImageDataset."""

from __future__ import annotations

import numpy as np
import torch

from fewbit.data.dataset import ImageDataset
from fewbit.data.task import Task
from fewbit.errors import ConfigError, DataError


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `[n, H, W]` (ink = 255) to float `[n, 1, H, W]` with strokes = 1."""
    return torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)


class EpisodeSampler:
    """Draws N-way K-shot Q-query tasks from `dataset` with an explicit `torch.Generator`.

    Labels are 0..N-1 assigned in a random order per task. With `rotations=True` each class
    rotated by 0/90/180/270 degrees counts as a class of its own (standard Omniglot practice).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        ways: int,
        shots: int,
        queries: int,
        rotations: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        for field, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"episodes.{field}: must be an integer >= {low}, got {value!r}")
        num_classes = dataset.num_classes * (4 if rotations else 1)
        if ways > num_classes:
            raise DataError(
                f"{ways}-way tasks need {ways} classes but {dataset.name} has {num_classes}; "
                f"lower --ways or use a larger split"
            )
        per_class = dataset.images_per_class()
        fewest = int(per_class.min()) if per_class.size else 0
        if shots + queries > fewest:
            raise DataError(
                f"shots + queries = {shots + queries} but some class of {dataset.name} has only {fewest} "
                f"images; lower --shots or --queries"
            )
        self.dataset = dataset
        self.ways, self.shots, self.queries, self.rotations = ways, shots, queries, rotations
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._images = images_to_tensor(dataset.images)  # [n, 1, H, W]
        order = np.argsort(dataset.labels, kind="stable")
        self._order = torch.from_numpy(order)
        self._starts = torch.from_numpy(np.concatenate([[0], np.cumsum(per_class)[:-1]]))
        self._counts = torch.from_numpy(per_class)
        self._num_virtual = num_classes

    def sample(self, tasks: int = 1) -> Task:
        """A meta-batch of `tasks` episodes (tensors with a leading `tasks` dimension)."""
        n, k, q = self.ways, self.shots, self.queries
        g = self.generator
        support_idx = torch.empty(tasks, n, k, dtype=torch.long)
        query_idx = torch.empty(tasks, n, q, dtype=torch.long)
        rot = torch.zeros(tasks, n, dtype=torch.long)
        for t in range(tasks):
            virtual = torch.randperm(self._num_virtual, generator=g)[:n]  # label i -> virtual[i]
            cls = virtual // 4 if self.rotations else virtual
            if self.rotations:
                rot[t] = virtual % 4
            for i, c in enumerate(cls.tolist()):
                pick = torch.randperm(int(self._counts[c]), generator=g)[: k + q] + self._starts[c]
                pick = self._order[pick]
                support_idx[t, i] = pick[:k]
                query_idx[t, i] = pick[k:]
        support_x = self._gather(support_idx, rot)  # [tasks, N*K, 1, H, W]
        query_x = self._gather(query_idx, rot)  # [tasks, N*Q, 1, H, W]
        labels = torch.arange(n)
        support_y = labels.repeat_interleave(k).expand(tasks, -1).clone()  # [tasks, N*K]
        query_y = labels.repeat_interleave(q).expand(tasks, -1).clone()  # [tasks, N*Q]
        return Task(support_x, support_y, query_x, query_y, ways=n)

    def _gather(self, idx: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        tasks, n, per = idx.shape
        x = self._images[idx.reshape(-1)].reshape(tasks, n, per, *self._images.shape[1:])
        if self.rotations:
            for r in (1, 2, 3):
                sel = rot == r  # [tasks, n]
                if sel.any():
                    x[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
        return x.reshape(tasks, n * per, *self._images.shape[1:])
