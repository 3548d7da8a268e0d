"""`adapt(model, support)`: a predictor for new queries of one task (or a batch of tasks)."""

from __future__ import annotations

import torch
from torch import nn

from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.base import Algorithm, MetaConfig, Params
from fewbit.meta.build import build_algorithm
from fewbit.meta.views import with_views


class AdaptedPredictor:
    """A PyTorch model adapted to a support set: `adapted(query_x)` (or `.predict(query_x)`) gives logits.

    It runs the algorithm's own `predict` (the same inner loop as training and `evaluate`) on
    the stored support set and the given queries, so the queries see the same batch
    statistics as in evaluation. With `views` 4 or 8 the task is scored in each rotation (and
    mirror) of its images and the logits averaged (`fewbit.meta.views`).
    """

    def __init__(
        self, model: nn.Module, algorithm: Algorithm, params: Params, extras: Params, support: Task, views: int = 1
    ) -> None:
        self.model, self.algorithm, self.params, self.extras, self.support = model, algorithm, params, extras, support
        self._predict = with_views(self._predict_task, views, tuple(support.support_x.shape[2:]))
        self.views = views

    def _predict_task(self, task: Task) -> torch.Tensor:
        return self.algorithm.predict(self.model, self.params, task, self.extras)

    def predict(self, query_x: torch.Tensor) -> torch.Tensor:
        """Logits `[n, ways]` for queries `[n, ...]` (or `[tasks, n, ways]` for a batched support)."""
        single = query_x.dim() == self.support.support_x.dim() - 1
        qx = query_x.unsqueeze(0) if single else query_x
        qy = torch.zeros(qx.shape[:2], dtype=self.support.support_y.dtype, device=qx.device)
        if self.support.support_y.is_floating_point():
            qy = qx.new_zeros(*qx.shape[:2], *self.support.support_y.shape[2:])
        task = Task(self.support.support_x, self.support.support_y, qx, qy, self.support.ways)
        out = self._predict(task)
        return out.squeeze(0) if single else out

    __call__ = predict


def adapt(
    model: nn.Module,
    support: Task | tuple[torch.Tensor, torch.Tensor],
    *,
    algorithm: Algorithm | str | None = None,
    config: MetaConfig | None = None,
    params: Params | None = None,
    extras: Params | None = None,
    views: int = 1,
) -> AdaptedPredictor:
    """A predictor adapted to `support`: a Task (its support part) or `(x [n, ...], y [n])`.

    `algorithm` (an Algorithm or a name) or `config` chooses the method (default: MAML with the
    default MetaConfig); `params` default to the model's own parameters, `extras` to none
    (Meta-SGD needs its learned rates). Unbatched `(x, y)` support is one task. A compressed
    model adapts as it ships: its fast weights stay compressed after every inner step. `views`
    (1, 4 or 8; square images only) scores each query in the rotations and mirrors of the task,
    as `fewbit eval --views` and `fewbit.runtime.adapt(views=)` do.

        >>> adapted = fewbit.adapt(run.model, (support_x, support_y), config=run.config.meta, extras=run.extras)
        >>> labels = adapted(query_x).argmax(-1)
    """
    if isinstance(algorithm, Algorithm):
        algo = algorithm
        if algo.project is None:  # built without the model: give it the model's compression
            algo = build_algorithm(algo.config, model=model)
    else:
        if config is None:
            config = MetaConfig(algorithm=algorithm or "maml")
        elif algorithm is not None and algorithm != config.algorithm:
            raise ConfigError(f"adapt: algorithm {algorithm!r} disagrees with config.algorithm {config.algorithm!r}")
        algo = build_algorithm(config, model=model)
    if not isinstance(support, Task):
        x, y = support
        if x.dim() < 2 or y.shape[0] != x.shape[0]:
            raise ConfigError(f"adapt: support x and y disagree in length ({x.shape[0]} vs {y.shape[0]})")
        ways = 0 if y.is_floating_point() else int(y.max()) + 1
        support = Task(x.unsqueeze(0), y.unsqueeze(0), x[:0].unsqueeze(0), y[:0].unsqueeze(0), ways)
    if params is None:
        params = dict(model.named_parameters())
    params = {n: p.detach() for n, p in params.items()}
    try:
        return AdaptedPredictor(model, algo, params, dict(extras or {}), support, views)
    except ValueError as exc:
        raise ConfigError(f"adapt: {exc}") from None
