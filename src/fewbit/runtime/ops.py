"""The runtime's layers in numpy: forward, and backward for on-device adaptation.

Activations are NHWC float32 inside the runtime (`[N, H, W, C]`): an im2col convolution is then
one matrix product whose result is already NHWC, with no transposes. Every op is a function of
(params, x); parameters live in a dict so that adaptation never mutates the loaded model.

Quantized weights stay in integer form: `Wq = codes - zero_point` (masked entries 0) and a
per-channel float scale. A layer whose input is quantized too (`input_quant`) multiplies integer
activations by integer weights and rescales once per output channel. Numpy has no integer GEMM
(its int32 matmul is a plain loop, many times slower than BLAS), so the integers are carried in
float32 BLAS, which is exact while every partial sum stays below 2**24; the bound is checked per
layer at load and a layer that could exceed it accumulates in float64 (exact below 2**53).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import NumericError
from fewbit.runtime.requant import requantize

Params = dict[str, np.ndarray]
F32_EXACT = 1 << 24
COLS_CHUNK_BYTES = 1 << 20  # im2col a few images at a time (tuned for one BLAS thread)
_ONE = np.float32(1)


class InputQuant:
    """Uniform activation quantization: `q = clip(rint(x / scale) + zero_point, qmin, qmax)`.

    Static when the manifest gives `scale` and `zero_point` (a calibrated model); `dynamic`
    derives them from each batch's min and max, in float32 as PyTorch's uncalibrated quantizer does.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.bits = int(spec["bits"])
        self.qmin = int(spec["qmin"])
        self.qmax = int(spec["qmax"])
        self.dynamic = bool(spec.get("dynamic", False))
        if self.qmin >= self.qmax or self.qmax - self.qmin >= 1 << 16:
            raise ValueError("input_quant needs qmin < qmax within 16 bits")
        if self.dynamic:
            self.scale, self.zero_point = np.float32(0), 0
            self.max_abs = self.qmax - self.qmin
        else:
            self.scale = np.float32(spec["scale"])
            self.zero_point = int(spec["zero_point"])
            if (
                not (self.scale > 0 and np.isfinite(self.scale))
                or not self.qmin <= self.zero_point <= self.qmax
            ):
                raise ValueError("input_quant needs a finite scale > 0 and qmin <= zero_point <= qmax")
            self.max_abs = max(self.zero_point - self.qmin, self.qmax - self.zero_point)

    def qparams(self, x: np.ndarray) -> tuple[np.float32, int]:
        """`(scale, zero_point)` for the batch `x`."""
        if not self.dynamic:
            return self.scale, self.zero_point
        lo = np.minimum(x.min(initial=np.float32(0)), np.float32(0))
        hi = np.maximum(x.max(initial=np.float32(0)), np.float32(0))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise NumericError("activations overflow to NaN or infinity before a quantized layer")
        scale = np.maximum((hi - lo) / np.float32(self.qmax - self.qmin), np.float32(1e-8)).astype(np.float32)
        zero_point = int(np.clip(np.rint(-lo / scale), self.qmin, self.qmax))
        return scale, zero_point

    def integers(self, x: np.ndarray, mask: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.float32]:
        """(`q - zero_point` as float32 integers, the straight-through pass mask (None unless `mask`),
        the scale)."""
        scale, zero_point = self.qparams(x)
        t = np.rint(x / scale)
        t += np.float32(zero_point)
        inside = ((t >= self.qmin) & (t <= self.qmax)) if mask else None
        np.clip(t, self.qmin, self.qmax, out=t)
        t -= np.float32(zero_point)
        return t.astype(np.float32, copy=False), inside, scale


class Weight:
    """A layer's weight, kept in its compressed form; `product(x2d, ...)` multiplies by it.

    Affine-quantized weights are held as small integers `codes - zero_point` (int8, or int16 for
    wide asymmetric grids; pruned entries 0) with per-output-channel scales, clustered ones as
    centroid indices and the codebook, float ones as float32. The float32 matrix a product needs
    is made for that forward pass only (one conversion per layer, cheap next to the convolution)
    and dropped afterwards, so the resident body stays 1 byte per weight. A conv weight
    `[cout, cin, kh, kw]` is laid out as `[kh*kw*cin, cout]` (channels innermost), the order of the
    im2col columns.
    """

    def __init__(self, tensor: np.ndarray | PackedTensor) -> None:
        self.shape = tuple(int(d) for d in tensor.shape)
        out = self.shape[0]
        self.kind = "float"
        self.max_abs = 0
        if isinstance(tensor, PackedTensor) and tensor.codebook is None:
            self.kind = "int"
            q = _channels_last(tensor.integer_weights()).reshape(out, -1)
            self.max_abs = int(np.abs(q).max()) if q.size else 0
            dtype = np.int8 if self.max_abs <= 127 else np.int16 if self.max_abs <= 32767 else np.int32
            self.codes_t = np.ascontiguousarray(q.T, dtype=dtype)  # [fan_in, out]
            scale = tensor.scale.astype(np.float32)
            if tensor.axis not in (None, 0) and scale.size > 1:
                raise ValueError("per-channel weight scales must run along the output axis (0)")
            self.row_scale = np.broadcast_to(scale.reshape(-1), (out,)).astype(np.float32)
        elif isinstance(tensor, PackedTensor):
            self.kind = "codebook"
            book = tensor.codebook.astype(np.float32)
            idx = tensor.code_array()
            if tensor.mask is not None:  # one more entry, 0, for pruned weights
                idx = np.where(tensor.mask, idx, len(book))
                book = np.append(book, np.float32(0))
            self.book = book
            self.index_t = np.ascontiguousarray(_channels_last(idx).reshape(out, -1).T, dtype=np.uint16)
        else:
            dense = _channels_last(np.asarray(tensor)).reshape(out, -1)
            self.float_t = np.ascontiguousarray(dense.T, dtype=np.float32)

    def integer_inputs(self, input_quant: InputQuant | None) -> bool:
        """Whether products with quantized inputs run on integers (both sides on integer grids)."""
        return input_quant is not None and self.kind == "int"

    def matrix_t(self, integer: bool = False) -> np.ndarray:
        """float32 `[fan_in, out]`: the integer codes (`integer`), else the weight's float values
        (`q * scale`, the very values PyTorch multiplies by)."""
        if self.kind == "int":
            codes = self.codes_t.astype(np.float32)
            return codes if integer else codes * self.row_scale
        if self.kind == "codebook":
            return self.book[self.index_t]
        return self.float_t

    def float_matrix(self) -> np.ndarray:
        """The float32 `[out, fan_in]` weight this stands for."""
        return self.matrix_t().T

    def product(
        self, x2d: np.ndarray, w_t: np.ndarray, input_quant: InputQuant | None, act_scale: np.float32 = _ONE
    ) -> np.ndarray:
        """`x2d @ W^T` as float32 `[rows, out]`, `w_t = self.matrix_t(self.integer_inputs(input_quant))`.

        With `input_quant`, `x2d` holds `q - zero_point` on a grid of step `act_scale`; on integer
        weights the sums are exact integers (as int32 accumulation gives) rescaled once per channel.
        """
        if input_quant is None:
            return x2d @ w_t
        if not self.integer_inputs(input_quant):
            return (x2d * act_scale) @ w_t
        if x2d.shape[1] * input_quant.max_abs * self.max_abs < F32_EXACT:
            acc = x2d @ w_t
        else:
            acc = (x2d.astype(np.float64) @ w_t.astype(np.float64)).astype(np.float32)
        return acc * (act_scale * self.row_scale)


def _channels_last(w: np.ndarray) -> np.ndarray:
    return w.transpose(0, 2, 3, 1) if w.ndim == 4 else w


def pair(value: Any, what: str, low: int, high: int) -> tuple[int, int]:
    """A manifest's size along height and width: one integer for both (a square, as Conv-4 writes it)
    or a list `[height, width]` (a series' `1 x 3` kernel row: padding `[0, 1]`, pooling `[1, 2]`);
    ValueError naming `what` unless each is an integer in `low..high`."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in items):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ValueError(f"{what} must be an integer or [height, width], each in {low}..{high}, got {shown}")
    return int(items[0]), int(items[1])


def pair_spec(h: int, w: int) -> int | list[int]:
    """The manifest form of a size along height and width: one integer when they are equal (the
    form every square model has always been written in), else `[h, w]`."""
    return int(h) if h == w else [int(h), int(w)]


class Op:
    """One layer: `forward(params, x, ctx)` and `backward(params, dy, ctx, grads) -> dx`."""

    kind = "op"
    param_names: tuple[str, ...] = ()

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        raise NotImplementedError

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        """The output shape (batch excluded: `(H, W, C)` or `(D,)`) for an input of `shape`; ValueError
        when they do not fit. Lets a loader check an architecture without running it."""
        return shape

    def children(self) -> list[Op]:
        """Ops nested inside this one (a residual's branches)."""
        return []

    def work(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(scratch float32 elements per image beyond input and output, scratch bytes per batch,
        multiply-adds per image), for `fewbit.runtime.limits` to bound a pass before it runs."""
        return 0, 0, 0


class Conv2dOp(Op):
    """3x3-style convolution by im2col; weight `[cout, cin, kh, kw]`, optional bias and input quantization.

    `padding` is zeros on each side: `pad_h` rows above and below, `pad_w` columns left and right
    (a series' `1 x 3` kernels pad `[0, 1]`); `stride` is the same along both axes.
    """

    kind = "conv2d"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        self.weight = Weight(tensors[spec["weight"]])
        if len(self.weight.shape) != 4:
            raise ValueError(f"conv2d {spec.get('name')}: weight must be 4-d, got {self.weight.shape}")
        self.cout, self.cin, self.kh, self.kw = self.weight.shape
        self.stride = int(spec.get("stride", 1))
        self.pad_h, self.pad_w = pair(spec.get("padding", 0), f"conv2d {spec.get('name')}: padding", 0, 16)
        if not 1 <= self.stride <= 16:
            raise ValueError(f"conv2d {spec.get('name')}: stride out of range (1..16)")
        self.bias_name = spec.get("bias")
        self.param_names = (self.bias_name,) if self.bias_name else ()
        self.input_quant = InputQuant(spec["input_quant"]) if spec.get("input_quant") else None

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        if len(shape) != 3 or shape[2] != self.cin:
            raise ValueError(f"conv2d expects {self.cin} input channels, gets {list(shape)}")
        ho, wo = self._out_size(shape[0], shape[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d: a {shape[0]}x{shape[1]} input is smaller than its kernel")
        if self.bias_name and params[self.bias_name].shape != (self.cout,):
            raise ValueError(f"conv2d bias must have {self.cout} values")
        return ho, wo, self.cout

    def work(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int]:
        h, w, c = in_shape
        ho, wo, _ = out_shape
        padded = (h + 2 * self.pad_h) * (w + 2 * self.pad_w) * c
        cols = ho * wo * self.kh * self.kw * self.cin  # one image's im2col rows
        # per batch: a chunk of im2col rows and its product, and the float32 weight matrix of this pass
        fixed = 2 * COLS_CHUNK_BYTES + 8 * self.cout * self.cin * self.kh * self.kw
        return padded + cols, fixed, ho * wo * self.cout * self.kh * self.kw * self.cin

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.stride
        return (h + 2 * self.pad_h - self.kh) // s + 1, (w + 2 * self.pad_w - self.kw) // s + 1

    def _geometry(self, x: np.ndarray) -> tuple[np.ndarray, int, int]:
        n, h, w, c = x.shape
        if c != self.cin:
            raise ValueError(f"conv2d expects {self.cin} input channels, got {c}")
        ho, wo = self._out_size(h, w)
        if ho < 1 or wo < 1:
            raise ValueError(f"conv2d: a {h}x{w} input is smaller than the {self.kh}x{self.kw} kernel")
        ph, pw = self.pad_h, self.pad_w
        xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
        return xp, ho, wo

    def _cols(self, xp: np.ndarray, ho: int, wo: int) -> np.ndarray:
        """im2col of padded images: `[n*Ho*Wo, kh*kw*C]`, one contiguous copy per kernel tap."""
        n, s, c = xp.shape[0], self.stride, self.cin
        cols = np.empty((n, ho, wo, self.kh, self.kw, c), dtype=np.float32)
        for i in range(self.kh):
            for j in range(self.kw):
                cols[:, :, :, i, j, :] = xp[:, i : i + s * ho : s, j : j + s * wo : s, :]
        return cols.reshape(n * ho * wo, self.kh * self.kw * c)

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        xin, act_scale = x, np.float32(1)
        if self.input_quant is not None:
            xin, _, act_scale = self.input_quant.integers(x, mask=False)
        xp, ho, wo = self._geometry(xin)
        n = xp.shape[0]
        w_t = self.weight.matrix_t(self.weight.integer_inputs(self.input_quant))
        y = np.empty((n, ho, wo, self.cout), dtype=np.float32)
        # A few images at a time: the column matrix stays in cache and peak memory stays small.
        step = max(1, COLS_CHUNK_BYTES // (4 * ho * wo * self.kh * self.kw * self.cin))
        for start in range(0, n, step):
            cols = self._cols(xp[start : start + step], ho, wo)
            out = self.weight.product(cols, w_t, self.input_quant, act_scale)
            y[start : start + step] = out.reshape(-1, ho, wo, self.cout)
        if self.bias_name:
            y += params[self.bias_name]
        if ctx is not None:
            ctx.update(x_shape=x.shape, x=x, out=(n, ho, wo))
        return y

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        n, ho, wo = ctx["out"]
        dy2 = dy.reshape(n * ho * wo, self.cout)
        if self.bias_name:
            grads[self.bias_name] = dy2.sum(axis=0)
        dcols = (dy2 @ self.weight.float_matrix()).reshape(n, ho, wo, self.kh, self.kw, self.cin)
        _, h, w, _ = ctx["x_shape"]
        ph, pw, s = self.pad_h, self.pad_w, self.stride
        dxp = np.zeros((n, h + 2 * ph, w + 2 * pw, self.cin), dtype=np.float32)
        for i in range(self.kh):
            for j in range(self.kw):
                dxp[:, i : i + s * ho : s, j : j + s * wo : s, :] += dcols[:, :, :, i, j, :]
        dx = dxp[:, ph : ph + h, pw : pw + w, :] if ph or pw else dxp
        if self.input_quant is not None:
            # straight-through: the gradient flows where the input lay inside the clipping range
            dx = dx * self.input_quant.integers(ctx["x"])[1]
        return dx


class LinearOp(Op):
    """`y = x W^T + b` on `[N, in]`; optional input quantization."""

    kind = "linear"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        self.weight_name = spec["weight"]
        self.weight = Weight(tensors[self.weight_name])
        if len(self.weight.shape) != 2:
            raise ValueError(f"linear {spec.get('name')}: weight must be 2-d, got {self.weight.shape}")
        self.out_features, self.in_features = self.weight.shape
        self.bias_name = spec.get("bias")
        self.param_names = (self.bias_name,) if self.bias_name else ()
        self.input_quant = InputQuant(spec["input_quant"]) if spec.get("input_quant") else None
        stored = tensors[self.weight_name]
        # What re-quantizing an adapted weight needs (grid, mask, codebook)
        self.stored = stored if isinstance(stored, PackedTensor) else None
        self.weight_rule = spec.get("weight_quant")

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        if shape != (self.in_features,):
            raise ValueError(f"linear expects {self.in_features} inputs, gets {list(shape)}")
        if self.bias_name and params[self.bias_name].shape != (self.out_features,):
            raise ValueError(f"linear bias must have {self.out_features} values")
        return (self.out_features,)

    def work(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int]:
        return 0, 8 * self.in_features * self.out_features, self.in_features * self.out_features

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"linear expects [N, {self.in_features}], got {list(x.shape)}")
        inside = None
        xin, act_scale = x, np.float32(1)
        if self.input_quant is not None:
            xin, inside, act_scale = self.input_quant.integers(x)
        override = params.get(self.weight_name)
        if override is not None:  # a weight being adapted: float32 in params, compressed on use
            xdq = xin * act_scale if self.input_quant is not None else xin
            y = xdq @ requantize(override, self.weight_rule, self.stored).T
        else:
            xdq = None
            w_t = self.weight.matrix_t(self.weight.integer_inputs(self.input_quant))
            y = self.weight.product(xin, w_t, self.input_quant, act_scale)
        if self.bias_name:
            y = y + params[self.bias_name]
        if ctx is not None:
            ctx.update(x=xdq, inside=inside)
        return y.astype(np.float32, copy=False)

    def project(self, params: Params) -> None:
        """Put an adapted weight back on its compressed values (grid, mask, codebook), in place: after
        every step, as a compressed PyTorch layer's fast weights are (`fewbit.compress.project_params`)."""
        override = params.get(self.weight_name)
        if override is not None and (self.weight_rule is not None or self.stored is not None):
            params[self.weight_name] = requantize(override, self.weight_rule, self.stored).astype(np.float32)

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        override = params.get(self.weight_name)
        if override is not None:
            grad = dy.T @ ctx["x"]  # straight through the re-quantization; pruned entries get none
            mask = self.stored.mask if isinstance(self.stored, PackedTensor) else None
            grads[self.weight_name] = grad if mask is None else grad * mask
            w = requantize(override, self.weight_rule, self.stored)
        else:
            w = self.weight.float_matrix()
        if self.bias_name:
            grads[self.bias_name] = dy.sum(axis=0)
        dx = dy @ w
        return dx * ctx["inside"] if ctx["inside"] is not None else dx


class BatchNormOp(Op):
    """Batch normalisation with the batch's own statistics (biased variance), per channel (last axis)."""

    kind = "batchnorm"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        self.weight_name, self.bias_name = spec["weight"], spec["bias"]
        eps = spec.get("eps", 1e-5)
        if not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"batchnorm eps must be a number in (0, 1), got {eps!r}")
        self.eps = np.float32(eps)
        self.param_names = (self.weight_name, self.bias_name)

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        channels = shape[-1]
        for name in self.param_names:
            if params[name].shape != (channels,):
                raise ValueError(f"batchnorm over {channels} channels has {name} of {params[name].size}")
        return shape

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axis=axes, dtype=np.float32)
        xc = x - mean
        var = np.mean(np.square(xc), axis=axes, dtype=np.float32)
        inv = (1.0 / np.sqrt(var + self.eps)).astype(np.float32)
        xhat = xc * inv
        if ctx is not None:
            ctx.update(xhat=xhat, inv=inv)
        return xhat * params[self.weight_name] + params[self.bias_name]

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        axes = tuple(range(dy.ndim - 1))
        xhat, inv = ctx["xhat"], ctx["inv"]
        grads[self.weight_name] = (dy * xhat).sum(axis=axes)
        grads[self.bias_name] = dy.sum(axis=axes)
        g = dy * params[self.weight_name]
        return inv * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes))


def conv_block(conv: Conv2dOp, bn: BatchNormOp, pool: MaxPool2dOp, params: Params, x: np.ndarray) -> np.ndarray:
    """conv -> batch-statistics BatchNormOp -> ReLUOp -> max-pool, fused, for inference.

    The convolution runs a few images at a time; from each chunk of its output (still in cache)
    the per-channel statistics are accumulated (Chan et al.'s pairwise update, exact in float64)
    and the pooling windows' max and min are kept, so the full-resolution output never exists.
    Once the batch statistics are known BatchNorm is a per-channel affine map and ReLU is
    monotone, so normalising the pooled max (the min where the scale is negative) equals
    pooling the normalised activations. When the im2col rows are short (a first layer on one
    input channel: 9 values against 64 outputs) the statistics come from the columns instead:
    the output is a linear map of them, so its mean and variance follow from their mean and
    covariance, and the wide output is only read once, by the pooling.
    """
    xin, act_scale = x, np.float32(1)
    if conv.input_quant is not None:
        xin, _, act_scale = conv.input_quant.integers(x, mask=False)
    xp, ho, wo = conv._geometry(xin)
    n, c = xp.shape[0], conv.cout
    kh, kw = pool.kernel
    hp, wp = ho // kh, wo // kw
    gamma = params[bn.weight_name]
    need_low = bool(np.any(gamma < 0))  # the scale gamma / std has the sign of gamma
    high = np.empty((n, hp, wp, c), np.float32)
    low = np.empty((n, hp, wp, c), np.float32) if need_low else high
    count, mean, m2 = 0, np.zeros(c), np.zeros(c)
    per_image = 4 * ho * wo * max(conv.kh * conv.kw * conv.cin, c)
    step = max(1, COLS_CHUNK_BYTES // per_image)
    bias = params[conv.bias_name] if conv.bias_name else None
    integer = conv.weight.integer_inputs(conv.input_quant)
    w_t = conv.weight.matrix_t(integer)
    fan = conv.kh * conv.kw * conv.cin
    from_columns = 2 * fan <= c
    col_sum, col_outer = np.zeros(fan), np.zeros((fan, fan))
    for start in range(0, n, step):
        cols = conv._cols(xp[start : start + step], ho, wo)
        out = conv.weight.product(cols, w_t, conv.input_quant, act_scale)
        if bias is not None:
            out += bias
        rows = out.shape[0]
        if from_columns:
            col_sum += cols.sum(axis=0, dtype=np.float64)
            col_outer += (cols.T @ cols).astype(np.float64)
            count += rows
        else:
            chunk_mean = (np.ones(rows, np.float32) @ out) / np.float32(rows)
            centered = out - chunk_mean
            chunk_m2 = np.einsum("ij,ij->j", centered, centered).astype(np.float64)
            delta = chunk_mean.astype(np.float64) - mean
            total = count + rows
            mean = mean + delta * (rows / total)
            m2 = m2 + chunk_m2 + delta * delta * (count * rows / total)
            count = total
        img = out.reshape(-1, ho, wo, c)[:, : hp * kh, : wp * kw]
        views = [img[:, i::kh, j::kw] for i in range(kh) for j in range(kw)]
        hi = high[start : start + step]
        np.maximum(views[0], views[1], out=hi) if len(views) > 1 else np.copyto(hi, views[0])
        for v in views[2:]:
            np.maximum(hi, v, out=hi)
        if need_low:
            lo = low[start : start + step]
            np.minimum(views[0], views[1], out=lo) if len(views) > 1 else np.copyto(lo, views[0])
            for v in views[2:]:
                np.minimum(lo, v, out=lo)
    if from_columns:  # out = cols @ a + b, so mean = E[cols] a + b and var = diag(a^T Cov[cols] a)
        a = w_t.astype(np.float64) * (float(act_scale) if conv.input_quant else 1.0)
        if integer:
            a *= conv.weight.row_scale.astype(np.float64)
        col_mean = col_sum / count
        cov = col_outer / count - np.outer(col_mean, col_mean)
        mean = col_mean @ a + (0.0 if bias is None else bias.astype(np.float64))
        m2 = np.maximum(np.einsum("ki,kl,li->i", a, cov, a), 0.0) * count
    mean32 = mean.astype(np.float32)
    inv = (1.0 / np.sqrt((m2 / count).astype(np.float32) + bn.eps)).astype(np.float32)
    pooled = np.where(gamma < 0, low, high) if need_low else high
    y = (pooled - mean32) * inv * gamma + params[bn.bias_name]
    return np.maximum(y, np.float32(0), out=y)


class ReLUOp(Op):
    kind = "relu"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        pass

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        y = np.maximum(x, np.float32(0))
        if ctx is not None:
            ctx["pos"] = x > 0
        return y

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        return dy * ctx["pos"]


class MaxPool2dOp(Op):
    """Non-overlapping max-pooling (kernel = stride); a ragged edge is dropped, as in PyTorch.

    `kernel` is `(kh, kw)`: a square window, or a series' `1 x 2` (the manifest's `[1, 2]`).
    """

    kind = "maxpool2d"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        self.kernel = pair(spec.get("kernel", 2), "maxpool2d: kernel", 1, 16)
        if pair(spec.get("stride", list(self.kernel)), "maxpool2d: stride", 1, 16) != self.kernel:
            raise ValueError("maxpool2d: only kernel == stride in 1..16 is supported")

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        kh, kw = self.kernel
        if len(shape) != 3 or shape[0] < kh or shape[1] < kw:
            raise ValueError(f"maxpool2d of {kh}x{kw} cannot pool {list(shape)}")
        return shape[0] // kh, shape[1] // kw, shape[2]

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        n, h, w, c = x.shape
        kh, kw = self.kernel
        ho, wo = h // kh, w // kw
        win = x[:, : ho * kh, : wo * kw].reshape(n, ho, kh, wo, kw, c)
        y = win.max(axis=(2, 4))
        if ctx is not None:
            ctx.update(x_shape=x.shape, win=win, y=y)
        return y

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        n, h, w, c = ctx["x_shape"]
        win, y = ctx["win"], ctx["y"]
        kh, kw = self.kernel
        hit = win == y[:, :, None, :, None, :]
        # PyTorch sends the gradient to the first maximum only (row by row through the window);
        # keep the first hit of each window.
        flat = hit.transpose(0, 1, 3, 5, 2, 4).reshape(*y.shape, kh * kw)
        first = np.zeros_like(flat)
        np.put_along_axis(first, flat.argmax(axis=-1)[..., None], True, axis=-1)
        first = first.reshape(*y.shape, kh, kw).transpose(0, 1, 4, 2, 5, 3)
        dwin = first * dy[:, :, None, :, None, :]
        dx = np.zeros((n, h, w, c), dtype=np.float32)
        dx[:, : y.shape[1] * kh, : y.shape[2] * kw] = dwin.reshape(n, y.shape[1] * kh, y.shape[2] * kw, c)
        return dx


class FlattenOp(Op):
    """NHWC to `[N, C*H*W]` in PyTorch's (C, H, W) order."""

    kind = "flatten"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        pass

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        return (int(np.prod(shape)),)

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        if ctx is not None:
            ctx["x_shape"] = x.shape
        if x.ndim == 4:
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
        return x.reshape(x.shape[0], -1)

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        shape = ctx["x_shape"]
        if len(shape) == 4:
            n, h, w, c = shape
            return dy.reshape(n, c, h, w).transpose(0, 2, 3, 1)
        return dy.reshape(shape)


class LeakyReLUOp(Op):
    """`max(x, slope * x)` (ResNet-12's activation)."""

    kind = "leaky_relu"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        slope = spec.get("slope", 0.01)
        if not isinstance(slope, (int, float)) or isinstance(slope, bool) or not 0 <= slope < 1:
            raise ValueError(f"leaky_relu slope must be a number in [0, 1), got {slope!r}")
        self.slope = np.float32(slope)

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        pos = x > 0
        if ctx is not None:
            ctx["pos"] = pos
        return np.where(pos, x, x * self.slope)

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        return np.where(ctx["pos"], dy, dy * self.slope)


class GlobalAvgPoolOp(Op):
    """The mean over height and width, `[N, H, W, C]` to `[N, 1, 1, C]` (PyTorch's AdaptiveAvgPool2d(1))."""

    kind = "global_avgpool"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        pass

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"global_avgpool needs an image, gets {list(shape)}")
        return 1, 1, shape[2]

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        if ctx is not None:
            ctx["x_shape"] = x.shape
        return x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        n, h, w, c = ctx["x_shape"]
        return np.broadcast_to(dy / np.float32(h * w), (n, h, w, c)).astype(np.float32)


class ResidualOp(Op):
    """`main(x) + shortcut(x)`: two branches of plain layers (ResNet-12's stage before its activation).

    Branches hold layers of the other kinds only (no residual inside a residual), so an
    architecture stays a short, bounded description.
    """

    kind = "residual"

    def __init__(self, spec: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
        self.branches: list[list[Op]] = []
        for key in ("main", "shortcut"):
            layers = spec.get(key)
            if not isinstance(layers, list) or not layers or len(layers) > 64:
                raise ValueError(f"residual {key} must be a list of 1..64 layers")
            ops = []
            for sub in layers:
                op = OPS.get(sub.get("op")) if isinstance(sub, Mapping) else None
                if op is None or op is ResidualOp:
                    raise ValueError(f"residual {key} holds an unknown or nested layer {sub!r:.60}")
                ops.append(op(sub, tensors))
            self.branches.append(ops)
        self.param_names = tuple(n for ops in self.branches for op in ops for n in op.param_names)

    def children(self) -> list[Op]:
        return [op for ops in self.branches for op in ops]

    def out_shape(self, shape: tuple[int, ...], params: Params) -> tuple[int, ...]:
        outs = []
        self._shapes: list[list[tuple[tuple[int, ...], tuple[int, ...]]]] = []  # (in, out) of each op, for `work`
        for ops in self.branches:
            s, steps = shape, []
            for op in ops:
                out = op.out_shape(s, params)
                steps.append((s, out))
                s = out
            outs.append(s)
            self._shapes.append(steps)
        if outs[0] != outs[1]:
            raise ValueError(f"residual branches disagree: {list(outs[0])} and {list(outs[1])}")
        return outs[0]

    def work(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The branches' work, their intermediate activations counted as scratch."""
        scratch = fixed = macs = 0
        for ops, steps in zip(self.branches, getattr(self, "_shapes", [])):
            for op, (a, b) in zip(ops, steps):
                op_scratch, op_fixed, op_macs = op.work(a, b)
                scratch += op_scratch + math.prod(b)
                fixed += op_fixed
                macs += op_macs
        return scratch, fixed, macs

    def forward(self, params: Params, x: np.ndarray, ctx: dict[str, Any] | None) -> np.ndarray:
        total = None
        for b, ops in enumerate(self.branches):
            h = x
            ctxs: list[dict[str, Any]] | None = [] if ctx is not None else None
            for op in ops:
                sub: dict[str, Any] | None = {} if ctxs is not None else None
                h = op.forward(params, h, sub)
                if ctxs is not None:
                    ctxs.append(sub)  # type: ignore[arg-type]
            if ctx is not None:
                ctx[b] = ctxs
            total = h if total is None else total + h
        return total  # type: ignore[return-value]

    def backward(self, params: Params, dy: np.ndarray, ctx: dict[str, Any], grads: Params) -> np.ndarray:
        dx = None
        for b, ops in enumerate(self.branches):
            d = dy
            for op, sub in zip(reversed(ops), reversed(ctx[b])):
                d = op.backward(params, d, sub, grads)
            dx = d if dx is None else dx + d
        return dx  # type: ignore[return-value]


OPS: dict[str, type[Op]] = {
    cls.kind: cls
    for cls in (  # type: ignore[type-abstract]
        Conv2dOp, LinearOp, BatchNormOp, ReLUOp, MaxPool2dOp, FlattenOp, LeakyReLUOp, GlobalAvgPoolOp, ResidualOp
    )
}


def walk_specs(specs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every layer spec of an architecture, the branches of residual layers included, in order."""
    out: list[Mapping[str, Any]] = []
    for spec in specs:
        out.append(spec)
        if isinstance(spec, Mapping) and spec.get("op") == ResidualOp.kind:
            for key in ("main", "shortcut"):
                out += [s for s in spec.get(key) or [] if isinstance(s, Mapping)]
    return out


def walk_ops(ops: list[Op]) -> list[Op]:
    """Every op, the branches of residual ops included, in order."""
    out: list[Op] = []
    for op in ops:
        out.append(op)
        out += op.children()
    return out
