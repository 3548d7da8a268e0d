"""Test-time views for torch predictors: each task scored in every rotation (and mirror) of its
images, the logits averaged. The same views as the numpy runtime's (`fewbit.runtime.views`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fewbit.data.task import Task
from fewbit.runtime.views import VIEWS, check_views

__all__ = ["VIEWS", "view", "with_views"]


def view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View `k` (0..7) of images `[..., H, W]`: rotated by k x 90 degrees, then mirrored for k >= 4."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def with_views(
    predict: Callable[[Task], torch.Tensor], views: int, input_shape: Sequence[int]
) -> Callable[[Task], torch.Tensor]:
    """`predict` scoring each task in `views` views (1, 4 or 8) and averaging the logits;
    ValueError when the views do not fit inputs of `input_shape` (square images for 4 and 8)."""
    views = check_views(views, input_shape)
    if views == 1:
        return predict

    def predict_views(task: Task) -> torch.Tensor:
        total = None
        for k in range(views):
            turned = Task(view(task.support_x, k), task.support_y, view(task.query_x, k), task.query_y, task.ways)
            logits = predict(turned)
            total = logits if total is None else total + logits
        assert total is not None
        return total / views

    return predict_views
