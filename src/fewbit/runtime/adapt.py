"""Adaptation on the device: class prototypes, or a few SGD steps on the head (and on biases
and norms when the artifact allows), the quantized body left as it is.

The artifact's `adaptation` block says how (the algorithm that trained the model wrote it,
mirroring its evaluation in `fewbit.meta`):
- `method: prototypes` (`embed: joint`): support and query are embedded in one batch (one set of
  BatchNorm statistics) and queries are scored by minus squared distance to the class means.
- `method: sgd`: `steps` SGD steps of size `lr` on the support cross-entropy (per parameter when
  `lr_tensors` names a learned rate tensor for it, as Meta-SGD exports). `head_init` is `own`
  (the artifact's meta-learned head: MAML, ANIL), `zeros` (the Baseline's new linear head) or
  `prototypes` (W = 2c, b = -|c|^2, the prototype classifier as a linear layer).
  With `embed: separate` the support set is its own batch while adapting and the queries are
  classified as their own batch (MAML); with `embed: joint` both are embedded together and the
  head is fitted on the support part (the Baseline). `scope` names what may move: `head` (the
  classifier's weight and bias), `bias` (every layer's bias), `norm` (BatchNorm scale and
  shift), joined by "+", or `none`; the runtime never moves quantized weights.
- `views`: 1, or 4 / 8 test-time views (`fewbit.runtime.views`): the task adapted to and scored
  in each rotation (and mirror) of its images, the views' logits averaged.
- `norm_stats`: `batch` (the above: BatchNormOp statistics of the batch being embedded) or
  `support` (statistics of the support set, frozen, each query embedded on its own: the mode of
  the exported C code; `fewbit.runtime.support_stats`). With `support` only the head adapts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.errors import LimitError, NumericError
from fewbit.runtime import limits
from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.ops import BatchNormOp, Conv2dOp, LinearOp, Op, Params, walk_ops
from fewbit.runtime.settings import (
    PROTOTYPES,
    SGD,
    scope_parts,
    settings_for,
)
from fewbit.runtime.support_stats import SupportStatistics, frozen_op, static_quant
from fewbit.runtime.views import view

SCORE_BYTES = 2 * 8  # a support image's logit per class, float64, and its softmax


class PlainHead(Op):
    """A float linear classifier on the embedding, `z @ W^T + b`, with W and b in params `__head.*`."""

    kind = "plain_head"
    weight_name, bias_name = "__head.weight", "__head.bias"
    param_names = ("__head.weight", "__head.bias")

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        if ctx is not None:
            ctx["x"] = x
        return x @ params[self.weight_name].T + params[self.bias_name]

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        grads[self.weight_name] = dy.T @ ctx["x"]
        grads[self.bias_name] = dy.sum(axis=0)
        return dy @ params[self.weight_name]


def class_means(embeddings: np.ndarray, labels: np.ndarray, ways: int) -> np.ndarray:
    """Class means `[ways, D]` of `embeddings [N, D]`."""
    onehot = np.eye(ways, dtype=np.float32)[labels]  # [N, ways]
    return (onehot.T @ embeddings) / onehot.sum(axis=0)[:, None]


def _transform(z: np.ndarray, centre: np.ndarray | None, settings: Mapping[str, Any]) -> np.ndarray:
    """Embeddings as the prototypes compare them: centred by the support mean, unit length."""
    if centre is not None:
        z = z - centre
    if settings["normalize"]:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z


def _compare(z_query: np.ndarray, protos: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """Logits of queries against prototypes: minus squared distances, or `scale` x cosine."""
    if settings["metric"] == "cosine":
        unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
        return (settings["scale"] * unit(z_query) @ unit(protos).T).astype(z_query.dtype)
    return -squared_distances(z_query, protos)


def _prototype_logits(
    z_support: np.ndarray, y: np.ndarray, z_query: np.ndarray, ways: int, settings: Mapping[str, Any]
) -> np.ndarray:
    """The queries' logits against the support class means, compared as the artifact says."""
    centre = z_support.mean(axis=0) if settings["center"] == "support" else None
    protos = class_means(_transform(z_support, centre, settings), y, ways)
    return _compare(_transform(z_query, centre, settings), protos, settings)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[len(a), len(b)]` squared Euclidean distances."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _Classifier:
    """`predict` and `scores` from a `logits(query_x)`."""

    def logits(self, query_x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, query_x: np.ndarray) -> np.ndarray:
        """Class indices `[Q]` in 0..ways-1."""
        return self.logits(query_x).argmax(axis=1)

    def scores(self, query_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class indices `[Q]`, softmax probability of each `[Q]`)."""
        logits = self.logits(query_x)
        pred = logits.argmax(axis=1)
        return pred, softmax(logits.astype(np.float64))[np.arange(len(pred)), pred]


@dataclasses.dataclass
class AdaptedTask(_Classifier):
    """A model adapted to one task: `logits(query_x)`, `predict(query_x)`, `scores(query_x)`.

    Query batches are classified as a whole (batch statistics), as PyTorch does; with
    `statistics` (norm_stats: support) each query is classified on its own.
    """

    model: RuntimeModel
    ways: int
    support_x: np.ndarray
    support_y: np.ndarray
    settings: dict[str, Any]
    params: Params | None = None
    head_ops: list[Op] | None = None
    losses: list[float] = dataclasses.field(default_factory=list)
    statistics: SupportStatistics | None = None
    prototypes: tuple[np.ndarray | None, np.ndarray] | None = None  # (centre, class means) under support statistics

    @property
    def method(self) -> str:
        return str(self.settings["method"])

    def logits(self, query_x: np.ndarray) -> np.ndarray:
        """`[Q, ways]` logits (minus squared distances for ProtoNet); NumericError when they overflow."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked just below
            out = self._logits(np.asarray(query_x, dtype=np.float32))
        if not np.all(np.isfinite(out)):
            raise NumericError("the adapted model's scores overflow to NaN or infinity; lower the learning rate")
        return out

    def _logits(self, query_x: np.ndarray) -> np.ndarray:
        model, n = self.model, len(self.support_x)
        if self.statistics is not None:
            z = self.statistics.embed(query_x)
            if self.method == PROTOTYPES:
                assert self.prototypes is not None
                centre, protos = self.prototypes
                return _compare(_transform(z.astype(np.float64), centre, self.settings), protos, self.settings)
            assert self.params is not None and self.head_ops is not None
            return _run(self.head_ops, self.params, z.astype(np.float32))
        if self.method == PROTOTYPES:
            z = model.embed(np.concatenate([self.support_x, query_x]))
            return _prototype_logits(z[:n], self.support_y, z[n:], self.ways, self.settings)
        if self.params is None:  # joint embedding: the head is fitted with these queries in the batch
            z = model.embed(np.concatenate([self.support_x, query_x]))
            params, head_ops = _fit_head(model, z[:n], self.support_y, self.ways, self.settings, self.losses)
            return _run(head_ops, params, z[n:])
        assert self.head_ops is not None
        return _run(self.head_ops, self.params, model.embed(query_x, self.params))


@dataclasses.dataclass
class ViewedTask(_Classifier):
    """A task adapted in each of its test-time views: logits are the mean over the views, each
    view's queries turned as its support set was."""

    views: list[AdaptedTask]

    @property
    def method(self) -> str:
        return self.views[0].method

    @property
    def settings(self) -> dict[str, Any]:
        """The views' adaptation settings, with `views` their number."""
        return {**self.views[0].settings, "views": len(self.views)}

    @property
    def ways(self) -> int:
        return self.views[0].ways

    def logits(self, query_x: np.ndarray) -> np.ndarray:
        """`[Q, ways]` logits averaged over the views; NumericError when one overflows."""
        query_x = np.asarray(query_x, dtype=np.float32)
        total = sum(task.logits(view(query_x, k)).astype(np.float64) for k, task in enumerate(self.views))
        return (total / len(self.views)).astype(np.float32)


def _run(
    ops: list[Op], params: Params, x: np.ndarray, ctxs: list[dict[str, Any]] | None = None
) -> np.ndarray:
    for op in ops:
        ctx: dict[str, Any] | None = {} if ctxs is not None else None
        x = op.forward(params, x, ctx)
        if ctxs is not None:
            ctxs.append(ctx)  # type: ignore[arg-type]
    return x


def _check_support(support_x: np.ndarray, support_y: Any) -> tuple[np.ndarray, int]:
    """(labels as int64 `[N]`, ways), or ValueError. Labels are checked before anything is sized by
    them: every class has a support image, so no label is N or more (a label of 1e9 would make
    1e9 classes)."""
    raw = np.asarray(support_y).reshape(-1)
    if raw.size != len(support_x) or raw.size == 0:
        raise ValueError(f"{len(support_x)} support images but {raw.size} labels")
    if raw.dtype.kind not in "biuf":
        raise ValueError(f"support labels must be integers 0..ways-1, got {raw.dtype} values")
    low, high = raw.min(), raw.max()
    if raw.dtype.kind == "f" and not (np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))):
        raise ValueError("support labels must be integers 0..ways-1, got fractions or non-finite numbers")
    if low < 0:
        raise ValueError(f"support labels must cover 0..ways-1, each at least once; got label {low:g}")
    if high >= raw.size:
        raise ValueError(f"support labels must cover 0..ways-1, each at least once; got label {high:g}, more "
                         f"classes than the {raw.size} support images")
    y = raw.astype(np.int64)
    ways = int(high) + 1
    if np.any(np.bincount(y, minlength=ways) == 0):
        raise ValueError("support labels must cover 0..ways-1, each at least once")
    if ways < 2:
        raise ValueError("a task needs at least two classes")
    scores = y.size * ways * SCORE_BYTES  # the support set's logits and their softmax, [N, ways] float64
    if scores > limits.MAX_BATCH_BYTES:
        raise LimitError(f"a task of {ways} classes and {y.size} support images needs {scores / (1 << 30):.1f} GiB "
                         f"for its scores, more than the limit {limits.MAX_BATCH_BYTES / (1 << 30):.0f} GiB; "
                         "use fewer classes")
    return y, ways


def adapt(
    model: RuntimeModel,
    support_x: np.ndarray,
    support_y: np.ndarray,
    *,
    method: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    scope: str | None = None,
    head_init: str | None = None,
    norm_stats: str | None = None,
    views: int | None = None,
) -> AdaptedTask | ViewedTask:
    """Adapt `model` to a support set `[N, C, H, W]` with labels `[N]` in 0..ways-1 (>= 2 ways).

    Defaults come from the artifact (its `adaptation` block); `scope` may narrow, never widen,
    what the artifact allows. `norm_stats="support"` freezes BatchNorm statistics from the support
    set and classifies each query on its own (what the exported C code does). `views=4` or `8`
    adapts to and scores every rotation (and mirror) of the task and averages the scores
    (`fewbit.runtime.views`): more accurate for glyphs, `views` times the work. ValueError on
    inconsistent arguments.

        model = fewbit.runtime.load("model.fewbit")
        task = fewbit.runtime.adapt(model, support_x, support_y, norm_stats="support")
        labels = task.predict(query_x)
    """
    support_x = np.asarray(support_x, dtype=np.float32)
    y, ways = _check_support(support_x, support_y)
    settings = settings_for(
        model, method=method, steps=steps, lr=lr, scope=scope, head_init=head_init, norm_stats=norm_stats,
        views=views,
    )
    if settings["views"] > 1:
        one = dict(method=method, steps=steps, lr=lr, scope=scope, head_init=head_init, norm_stats=norm_stats, views=1)
        return ViewedTask([adapt(model, view(support_x, k), y, **one) for k in range(settings["views"])])
    _check_work(model, len(support_x), settings)
    adapted = AdaptedTask(model, ways, support_x, y, settings)
    if settings["norm_stats"] == "support":
        adapted.statistics = SupportStatistics(model, support_x)
        z = adapted.statistics.embed(support_x)
        if settings["method"] == PROTOTYPES:
            zs = z.astype(np.float64)
            centre = zs.mean(axis=0) if settings["center"] == "support" else None
            adapted.prototypes = (centre, class_means(_transform(zs, centre, settings), y, ways))
        else:
            z32 = z.astype(np.float32)
            head = [  # a head quantizing its input with each batch's range takes the support set's
                frozen_op(op, static_quant(q, *q.qparams(z32))) if (q := getattr(op, "input_quant", None)) and q.dynamic
                else op
                for op in model.layers[model.embedding_layers :]
            ]
            adapted.params, adapted.head_ops = _fit_head(model, z32, y, ways, settings, adapted.losses, head)
        return adapted
    if settings["method"] == SGD and settings["embed"] == "separate":
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a diverging loss is an error
            adapted.params, adapted.head_ops = _fit(model, support_x, y, ways, settings, adapted.losses)
    return adapted


def check_support_size(model: RuntimeModel, images: int, **options: Any) -> None:
    """LimitError when adapting `model` to `images` support images, as `adapt(model, ...,
    **options)` would, needs more memory or multiply-adds than the limits allow: asked before
    any image is read. ValueError on inconsistent options."""
    _check_work(model, images, settings_for(model, **options))


def _check_work(model: RuntimeModel, images: int, settings: Mapping[str, Any]) -> None:
    moving_body = settings["method"] == SGD and bool(_body_trainable(model, settings["scope"]))
    limits.check_adaptation_work(model.cost, images, settings["steps"] * (settings["method"] == SGD),
                                 backward=moving_body)


def _init_head(
    model: RuntimeModel,
    z_support: np.ndarray,
    y: np.ndarray,
    ways: int,
    settings: Mapping[str, Any],
    head: list[Op] | None = None,
) -> tuple[Params, list[Op], set[str]]:
    """(params, head ops, the head parameters the scope moves) to start fine-tuning from; `head`
    replaces the artifact's head layers (the same layers with frozen input ranges)."""
    params = dict(model.params)
    parts = scope_parts(settings["scope"])
    weight_name = model.head_weight_name()
    init = settings["head_init"]
    if init == "own" and weight_name is not None and model.ways == ways:
        head_ops = model.layers[model.embedding_layers :] if head is None else head
        names: set[str] = set()
        if "head" in parts:
            params[weight_name] = model.float_tensor(weight_name)
            names = {weight_name} | {n for op in head_ops for n in op.param_names}
        elif "bias" in parts:
            names = {n for op in head_ops for n in op.param_names}
        return params, head_ops, names
    if init == "zeros":
        params["__head.weight"] = np.zeros((ways, z_support.shape[1]), np.float32)
        params["__head.bias"] = np.zeros(ways, np.float32)
    else:  # prototypes (also the fallback when the artifact's head does not fit the task)
        protos = class_means(z_support, y, ways)
        params["__head.weight"] = 2 * protos
        params["__head.bias"] = -(protos * protos).sum(axis=1)
    # a new head always learns: without it the task's classes would have no classifier
    return params, [PlainHead()], set(PlainHead.param_names)


def _body_trainable(model: RuntimeModel, scope: str) -> set[str]:
    parts = scope_parts(scope)
    names: set[str] = set()
    for op in walk_ops(model.layers[: model.embedding_layers]):
        if ("bias" in parts and isinstance(op, (Conv2dOp, LinearOp))) or (
            "norm" in parts and isinstance(op, BatchNormOp)
        ):
            names |= set(op.param_names)
    return names


def _ce_grad(logits: np.ndarray, y: np.ndarray, ways: int) -> tuple[np.ndarray, float]:
    """Gradient of the mean cross-entropy w.r.t. the logits, and the loss."""
    p = softmax(logits.astype(np.float64))
    loss = float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-300)).mean())
    p[np.arange(len(y)), y] -= 1.0
    return (p / len(y)).astype(np.float32), loss


def _check_loss(loss: float, step: int) -> None:
    if not np.isfinite(loss):
        raise NumericError(f"adaptation diverged at step {step + 1} (the loss is {loss}); lower the learning rate")


def _sgd(params: Params, grads: Mapping[str, np.ndarray], names: set[str], settings: Mapping[str, Any],
         index: int) -> None:
    """Step `index` on `names`: a parameter's learned rate where the artifact has one (per entry,
    Meta-SGD; per step, LSLR, steps past the learned ones taking the last), else `settings["lr"]`."""
    rates, step_rates = settings.get("rates") or {}, settings.get("step_rates") or {}
    for name in names:
        if name in grads:
            step = rates.get(name)
            if step is None and name in step_rates:
                per_step = step_rates[name]
                step = per_step[min(index, per_step.size - 1)]
            step = np.float32(settings["lr"]) if step is None else step
            params[name] = (params[name] - step * grads[name]).astype(np.float32)


def _fit_head(
    model: RuntimeModel,
    z: np.ndarray,
    y: np.ndarray,
    ways: int,
    settings: Mapping[str, Any],
    losses: list[float],
    head: list[Op] | None = None,
) -> tuple[Params, list[Op]]:
    """SGD on the head alone over fixed support embeddings `z`."""
    params, head_ops, names = _init_head(model, z, y, ways, settings, head)
    for index in range(settings["steps"]):
        ctxs: list[dict[str, Any]] = []
        dlogits, loss = _ce_grad(_run(head_ops, params, z, ctxs), y, ways)
        _check_loss(loss, len(losses))
        losses.append(loss)
        grads: Params = {}
        for op, ctx in zip(reversed(head_ops), reversed(ctxs)):
            dlogits = op.backward(params, dlogits, ctx, grads)
        _sgd(params, grads, names, settings, index)
        _project(params, head_ops)
    return params, head_ops


def _project(params: Params, ops: list[Op]) -> None:
    """Adapted weights back on their compressed values after a step (see `LinearOp.project`)."""
    for op in ops:
        if isinstance(op, LinearOp):
            op.project(params)


def _fit(
    model: RuntimeModel,
    support_x: np.ndarray,
    y: np.ndarray,
    ways: int,
    settings: Mapping[str, Any],
    losses: list[float],
) -> tuple[Params, list[Op]]:
    """SGD with the support set as its own batch; through the body when biases or norms move."""
    body = _body_trainable(model, settings["scope"])
    if not body:
        return _fit_head(model, model.embed(support_x), y, ways, settings, losses)
    params, head_ops, names = _init_head(model, model.embed(support_x), y, ways, settings)
    names |= body
    first = min(i for i, op in enumerate(model.layers) if set(op.param_names) & body)
    x = model.to_nhwc(support_x)
    for index in range(settings["steps"]):
        body_ctxs: list[dict[str, Any]] = []
        z = model.run_layers(x, params, 0, model.embedding_layers, body_ctxs)
        head_ctxs: list[dict[str, Any]] = []
        d, loss = _ce_grad(_run(head_ops, params, z, head_ctxs), y, ways)
        _check_loss(loss, len(losses))
        losses.append(loss)
        grads: Params = {}
        for op, ctx in zip(reversed(head_ops), reversed(head_ctxs)):
            d = op.backward(params, d, ctx, grads)
        for i in range(model.embedding_layers - 1, first - 1, -1):
            d = model.layers[i].backward(params, d, body_ctxs[i], grads)
        _sgd(params, grads, names, settings, index)
        _project(params, head_ops)
    return params, head_ops
