"""Support-set statistics: BatchNormOp statistics taken from the support set, frozen, and every query
embedded on its own (`norm_stats: support`), the mode a microcontroller can run.

Every fewbit backbone normalises with the statistics of the batch it sees (README, "Why BatchNorm
uses batch statistics"): ProtoNet embeds support and query as one batch, MAML-style adaptation
sees the support set as a batch and classifies the queries as their own batch. A device with a
few hundred KB of RAM cannot hold a batch's activations. This mode keeps the statistics a batch
would give and drops the batch:

1. Statistics, layer by layer: the statistics of layer l are those of the support set's
   activations at layer l, computed with layers < l already frozen. A device streams them: for
   each support image it re-runs layers < l and accumulates the sum and the sum of squares of
   layer l's outputs, so one image's activations are live at a time (the C export does this).
   Since the statistics of layers < l are the support set's own, this equals one forward of the
   support set as a batch, which is how numpy computes it here.
2. Frozen: each BatchNorm becomes a per-channel affine map, and each query is embedded alone,
   independently of the other queries.

Activation quantizers that take their range from each batch (a model whose activation ranges
were never calibrated, which is what meta-training leaves) take it from the support set the same
way, layer by layer: the range of the support set's inputs to that layer.

On an integer body (every conv/linear with integer weights and an input quantizer of at most
8 bits) the statistics are exact integer sums of the int32 accumulators, and the frozen
BatchNorm, ReLU, max-pool and the next layer's input quantization become one fixed-point
requantization per channel (`fewbit.runtime.fixedpoint`): the embedding is a Q16 integer, bit
for bit what the exported C code computes. Otherwise the body runs in float32.

What it costs in accuracy against the batch modes is measured by `benchmarks/c_runtime.py`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

import numpy as np

from fewbit.runtime import fixedpoint
from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.ops import F32_EXACT, BatchNormOp, Conv2dOp, InputQuant, LinearOp, MaxPool2dOp, Op

INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Stage:
    """One block of the body: a conv or linear layer, then optionally BatchNorm, ReLU, max-pool.

    `pool` is the max-pool's window `(kh, kw)` (`(1, 1)`: none); `flatten` says that the layer's
    input is flattened first (PyTorch's C, H, W order).
    """

    linop: Conv2dOp | LinearOp
    bn: BatchNormOp | None
    relu: bool
    pool: tuple[int, int]
    flatten: bool


def body_stages(model: RuntimeModel) -> list[Stage]:
    """The body as stages of `conv2d|linear [batchnorm] [relu] [maxpool2d]` with flattens between;
    ValueError naming the first layer that does not fit that shape."""
    ops: list[Op] = model.layers[: model.embedding_layers]
    stages: list[Stage] = []
    i, flatten = 0, False
    while i < len(ops):
        op = ops[i]
        if op.kind == "flatten":
            flatten, i = True, i + 1
            continue
        if not isinstance(op, (Conv2dOp, LinearOp)):
            raise ValueError(
                f"layer {i} ({op.kind}) does not start a conv2d|linear [batchnorm] [relu] [maxpool2d] block"
            )
        j = i + 1
        bn = None
        if j < len(ops) and isinstance(ops[j], BatchNormOp):
            bn, j = ops[j], j + 1
        relu = j < len(ops) and ops[j].kind == "relu"
        j += int(relu)
        pool = (1, 1)
        if j < len(ops) and isinstance(ops[j], MaxPool2dOp):
            pool, j = ops[j].kernel, j + 1
        stages.append(Stage(op, bn, relu, pool, flatten))
        flatten, i = False, j
    if not stages:
        raise ValueError("the body has no conv2d or linear layer")
    return stages


def integer_body(stages: list[Stage]) -> bool:
    """Whether every stage multiplies integers: integer weights and an unsigned input quantizer of at
    most 8 bits (the C code keeps such activations in bytes), and no accumulator beyond int32."""
    return all(
        s.linop.weight.kind == "int"
        and s.linop.input_quant is not None
        and s.linop.input_quant.qmin >= 0
        and s.linop.input_quant.qmax <= 255
        and accumulator_bound(s) <= INT32_MAX
        for s in stages
    )


def static_quant(quant: InputQuant, scale: np.float32, zero_point: int) -> InputQuant:
    """`quant` with the range fixed to `scale` and `zero_point`."""
    spec = {"bits": quant.bits, "scale": float(scale), "zero_point": int(zero_point)}
    return InputQuant({**spec, "qmin": quant.qmin, "qmax": quant.qmax})


def frozen_op(op: Op, quant: InputQuant) -> Op:
    """A copy of a conv/linear op whose input quantizer is `quant`."""
    out = copy.copy(op)
    out.input_quant = quant  # type: ignore[attr-defined]
    return out


def accumulator_bound(stage: Stage) -> int:
    """The largest |int32 accumulator| the stage's integer product can reach."""
    fan = int(np.prod(stage.linop.weight.shape[1:]))
    assert stage.linop.input_quant is not None
    return fan * stage.linop.input_quant.max_abs * stage.linop.weight.max_abs


@dataclasses.dataclass
class _Frozen:
    """One stage's requantization: per-channel (M, S, B) and the output's zero point and clip range."""

    mult: np.ndarray
    shift: np.ndarray
    offset: np.ndarray
    zero: int
    lo: int
    hi: int


class SupportStatistics:
    """A RuntimeModel's body with BatchNorm statistics frozen from a support set `[N, C, H, W]`.

    `embed(x)` embeds each image of `x` on its own; `embed_fixed(x)` gives the Q16 integer
    embedding of an integer body (what the exported C code computes, bit for bit).
    """

    def __init__(self, model: RuntimeModel, support_x: np.ndarray, params: Mapping[str, np.ndarray] | None = None):
        self.model = model
        self.params = dict(model.params if params is None else params)
        try:
            self.stages = body_stages(model)
        except ValueError:  # not conv/linear blocks: the float path, layer by layer, still applies
            self.stages = []
        self.integer = bool(self.stages) and integer_body(self.stages)
        # each stage's input quantizer, a per-batch one replaced by the support set's range
        self.quant: list[InputQuant | None] = [s.linop.input_quant for s in self.stages]
        x = model.to_nhwc(support_x)
        if self.integer:
            self._frozen: list[_Frozen] = []
            self._fit_integer(x)
        else:
            self._bn_stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            self._ops: list[Op] = list(model.layers[: model.embedding_layers])
            self._fit_float(x)

    # --------------------------------------------------------------------------------- integer

    def _input(self, x: np.ndarray) -> np.ndarray:
        quant = self.quant[0]
        assert quant is not None
        if self.stages[0].flatten:
            x = _flatten(x)
        return quant.integers(x, mask=False)[0].astype(np.int64)

    def _accumulate(self, stage: Stage, x: np.ndarray) -> np.ndarray:
        """int64 accumulators `[N, H, W, C]` or `[N, C]` of integer inputs `x` (exact)."""
        op = stage.linop
        w_t = op.weight.codes_t
        exact32 = accumulator_bound(stage) < F32_EXACT
        dtype = np.float32 if exact32 else np.float64
        w = w_t.astype(dtype)
        if isinstance(op, LinearOp):
            return np.rint(x.astype(dtype) @ w).astype(np.int64)
        xp, ho, wo = op._geometry(x.astype(np.float32))
        n = xp.shape[0]
        out = np.empty((n, ho, wo, op.cout), dtype=np.int64)
        step = max(1, (1 << 20) // (4 * ho * wo * op.kh * op.kw * op.cin))
        for start in range(0, n, step):
            cols = op._cols(xp[start : start + step], ho, wo).astype(dtype, copy=False)
            out[start : start + step] = np.rint(cols @ w).reshape(-1, ho, wo, op.cout).astype(np.int64)
        return out

    def _target(self, index: int) -> tuple[float, int, int, int]:
        """(scale, zero point, qmin, qmax) that stage `index`'s output is quantized to."""
        if index + 1 < len(self.stages):
            quant = self.quant[index + 1]
            assert quant is not None
            return float(quant.scale), quant.zero_point, quant.qmin, quant.qmax
        return 2.0**-fixedpoint.EMBED_FRAC_BITS, 0, -INT32_MAX - 1, INT32_MAX

    def _affine(self, index: int, acc: np.ndarray) -> list[tuple[float, float]]:
        """Per channel `(a, b)`: the stage's output before ReLU is `a * acc + b` (real units)."""
        stage = self.stages[index]
        op = stage.linop
        quant = self.quant[index]
        assert quant is not None
        channels = acc.shape[-1]
        act_scale = float(quant.scale)
        scales = [act_scale * float(s) for s in op.weight.row_scale]
        if stage.bn is not None:
            count, sum1, sum2 = _exact_sums(acc.reshape(-1, channels), accumulator_bound(stage))
            gamma = self.params[stage.bn.weight_name]
            beta = self.params[stage.bn.bias_name]
            eps = float(stage.bn.eps)  # the float32 eps the batch path adds, as a double
            affine = [
                fixedpoint.batchnorm_affine(count, sum1[c], sum2[c], scales[c], eps, float(gamma[c]), float(beta[c]))
                for c in range(channels)
            ]
        else:
            bias = self.params[op.bias_name] if op.bias_name else np.zeros(channels, np.float32)
            affine = [(scales[c], float(bias[c])) for c in range(channels)]
        return affine

    def _freeze(self, index: int, affine: list[tuple[float, float]]) -> _Frozen:
        stage = self.stages[index]
        out_scale, zero, qmin, qmax = self._target(index)
        last = index + 1 == len(self.stages)
        if last:  # Q16: multiplying by 2**16 is exact, as in the C code
            factor = float(2**fixedpoint.EMBED_FRAC_BITS)
            pairs = [fixedpoint.multiplier(a * factor, b * factor) for a, b in affine]
        else:
            pairs = [fixedpoint.multiplier(a / out_scale, b / out_scale) for a, b in affine]
        lo = max(qmin, zero) if stage.relu else qmin
        return _Frozen(
            mult=np.array([p[0] for p in pairs], np.int64),
            shift=np.array([p[1] for p in pairs], np.int64),
            offset=np.array([p[2] for p in pairs], np.int64),
            zero=zero,
            lo=lo,
            hi=qmax,
        )

    def _output(self, index: int, acc: np.ndarray) -> np.ndarray:
        f = self._frozen[index]
        y = fixedpoint.requantize(acc, f.mult, f.shift, f.offset, f.zero, f.lo, f.hi)
        kh, kw = self.stages[index].pool
        if kh * kw > 1:  # requantization is monotone per channel, so pooling after it is pooling before
            n, h, w, c = y.shape
            ho, wo = h // kh, w // kw
            y = y[:, : ho * kh, : wo * kw].reshape(n, ho, kh, wo, kw, c).max(axis=(2, 4))
        return y

    def _fit_integer(self, x: np.ndarray) -> None:
        first = self.quant[0]
        assert first is not None
        if first.dynamic:  # the range of the support images
            self.quant[0] = static_quant(first, *first.qparams(x))
        h = self._input(x)
        for index, stage in enumerate(self.stages):
            if stage.flatten and index:
                h = _flatten(h)
            acc = self._accumulate(stage, h)
            affine = self._affine(index, acc)
            nxt = self.quant[index + 1] if index + 1 < len(self.stages) else None
            if nxt is not None and nxt.dynamic:  # the range of this stage's outputs over the support set
                flat = acc.reshape(-1, acc.shape[-1])
                lo, hi = fixedpoint.output_range(affine, flat.min(axis=0), flat.max(axis=0), stage.relu)
                self.quant[index + 1] = static_quant(nxt, *fixedpoint.range_qparams(lo, hi, nxt.qmin, nxt.qmax))
            self._frozen.append(self._freeze(index, affine))
            h = self._output(index, acc)

    def embed_fixed(self, x: np.ndarray) -> np.ndarray:
        """Q16 embeddings `[N, D]` (int64, value = e / 2**16) of an integer body; each row alone."""
        if not self.integer:
            raise ValueError("this body is not integer: use embed()")
        h = self._input(self.model.to_nhwc(x))
        for index, stage in enumerate(self.stages):
            if stage.flatten and index:
                h = _flatten(h)
            h = self._output(index, self._accumulate(stage, h))
        return _flatten(h) if h.ndim == 4 else h

    # --------------------------------------------------------------------------------- float

    def _run_float(self, x: np.ndarray, fit: bool) -> np.ndarray:
        for i, op in enumerate(self._ops):
            quant = getattr(op, "input_quant", None)
            if fit and quant is not None and quant.dynamic:  # the range of the support set's inputs here
                op = self._ops[i] = frozen_op(op, static_quant(quant, *quant.qparams(x)))
            if isinstance(op, BatchNormOp):
                if fit:  # the support batch's statistics, in float32 as BatchNormOp.forward takes them
                    axes = tuple(range(x.ndim - 1))
                    mean = x.mean(axis=axes, dtype=np.float32)
                    var = np.mean(np.square(x - mean), axis=axes, dtype=np.float32)
                    self._bn_stats[i] = (mean, (1.0 / np.sqrt(var + op.eps)).astype(np.float32))
                mean, inv = self._bn_stats[i]
                x = (x - mean) * inv * self.params[op.weight_name] + self.params[op.bias_name]
            else:
                x = op.forward(self.params, x, None)
        return x

    def _fit_float(self, x: np.ndarray) -> None:
        self._run_float(x, fit=True)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embeddings `[N, D]`, each image on its own (float64 values of the Q16 integers on an integer
        body, float32 otherwise)."""
        if self.integer:
            return self.embed_fixed(x).astype(np.float64) / float(2**fixedpoint.EMBED_FRAC_BITS)
        return self._run_float(self.model.to_nhwc(x), fit=False)


def _flatten(x: np.ndarray) -> np.ndarray:
    """NHWC to `[N, C*H*W]` in PyTorch's (C, H, W) order (a flat input passes through)."""
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
    return x


def _exact_sums(acc: np.ndarray, bound: int) -> tuple[int, list[int], list[int]]:
    """(count, per-channel sums, per-channel sums of squares) of int64 `acc [rows, C]`, exact:
    int64 over chunks small enough not to overflow, Python integers across chunks."""
    rows, channels = acc.shape
    chunk = max(1, (2**62) // max(1, bound * bound))
    sum1, sum2 = [0] * channels, [0] * channels
    for start in range(0, rows, chunk):
        part = acc[start : start + chunk]
        s1 = part.sum(axis=0).tolist()
        s2 = np.einsum("ij,ij->j", part, part).tolist()
        sum1 = [a + b for a, b in zip(sum1, s1)]
        sum2 = [a + b for a, b in zip(sum2, s2)]
    return rows, sum1, sum2
