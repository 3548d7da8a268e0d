"""Task: the support and query sets of one episode, or of a meta-batch of episodes."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Task:
    """Support and query tensors; batched when they carry a leading `tasks` dimension.

    Batched image tasks: `support_x [tasks, N*K, C, H, W]`, `support_y [tasks, N*K]`,
    `query_x [tasks, N*Q, C, H, W]`, `query_y [tasks, N*Q]`. Regression tasks use
    `x [tasks, points, 1]` and float `y [tasks, points, 1]`.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    ways: int = 0  # 0 for regression

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def __getitem__(self, index: int | slice) -> Task:
        """The task(s) at `index` of a batch, keeping the leading dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Task(self.support_x[index], self.support_y[index], self.query_x[index], self.query_y[index], self.ways)

    def to(self, device: torch.device | str) -> Task:
        """The same task on `device`."""
        return Task(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x, self.query_y)), self.ways)
