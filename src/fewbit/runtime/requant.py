"""Re-quantizing a weight that adaptation moves, as the compressed PyTorch layer does on every forward.

A compressed layer quantizes whatever weight it sees (fast weights of an inner loop included),
re-deriving the grid with its observer unless the step is learned (LSQ), and passes gradients
straight through. The manifest's `weight_quant` block says which rule the layer used; these
functions are the numpy twins of `fewbit.compress.quantize` (min-max, percentile, MSE observers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.artifact.tensor import PackedTensor

_EPS = np.float32(1e-8)
_MSE_GRID = np.linspace(0.3, 1.0, 15, dtype=np.float32)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range of a `bits`-bit grid (1-bit symmetric: (-1, 1))."""
    if symmetric:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


def _scale_zp(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = np.maximum(hi, _EPS) / np.float32(1 if bits == 1 else qmax)
        return scale.astype(np.float32), np.zeros_like(scale)
    scale = np.maximum((hi - lo) / np.float32(qmax - qmin), _EPS).astype(np.float32)
    return scale, np.clip(np.rint(-lo / scale), qmin, qmax).astype(np.float32)


def _fake(rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    qmin, qmax = qrange(bits, symmetric)
    if symmetric and bits == 1:
        return np.where(rows >= 0, np.float32(1), np.float32(-1)) * scale
    q = np.clip(np.rint(rows / scale) + zp, qmin, qmax)
    return (q * scale if symmetric else (q - zp) * scale).astype(np.float32)


def _percentile(rows: np.ndarray, p: float) -> np.ndarray:
    n = rows.shape[1]
    k = min(n - 1, max(0, math.ceil(p / 100.0 * n) - 1))
    return np.sort(rows, axis=1)[:, k]


def _range(
    rows: np.ndarray, bits: int, symmetric: bool, observer: str, percentile: float
) -> tuple[np.ndarray, np.ndarray]:
    if symmetric:
        mag = np.abs(rows)
        if observer == "percentile":
            hi = _percentile(mag, percentile)
        elif observer == "mse":
            hi = mag.max(axis=1) * _mse_alpha(rows, -mag.max(axis=1), mag.max(axis=1), bits, True)
        else:
            hi = mag.max(axis=1)
        return -hi, hi
    lo, hi = np.minimum(rows.min(axis=1), 0), np.maximum(rows.max(axis=1), 0)
    if observer == "percentile":
        lo = np.minimum(_percentile(rows, 100.0 - percentile), 0)
        hi = np.maximum(_percentile(rows, percentile), 0)
    elif observer == "mse":
        alpha = _mse_alpha(rows, lo, hi, bits, False)
        lo, hi = lo * alpha, hi * alpha
    return lo.astype(np.float32), hi.astype(np.float32)


def _mse_alpha(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    errors = []
    for a in _MSE_GRID:
        scale, zp = _scale_zp(lo * a, hi * a, bits, symmetric)
        q = _fake(rows, scale[:, None], zp[:, None], bits, symmetric)
        errors.append(((q - rows) ** 2).mean(axis=1))
    return _MSE_GRID[np.stack(errors, 1).argmin(axis=1)]


def requantize(
    weight: np.ndarray, rule: Mapping[str, Any] | None, stored: PackedTensor | np.ndarray
) -> np.ndarray:
    """`weight` mapped onto its layer's compressed value by `rule` (the manifest's `weight_quant`).

    `observer` rules re-derive the grid from `weight`; `fixed` keeps the stored grid (learned
    steps, converted models); `codebook` snaps to the stored centroids. Pruned entries stay 0.
    """
    mask = stored.mask if isinstance(stored, PackedTensor) else None
    w = weight if mask is None else weight * mask
    if rule is None or not isinstance(stored, PackedTensor):
        return w.astype(np.float32)
    kind = rule.get("rule")
    if kind == "codebook" and stored.codebook is not None:
        book = stored.codebook
        out = book[np.abs(w[..., None] - book).argmin(axis=-1)]
    elif kind == "observer":
        bits, symmetric = int(rule["bits"]), bool(rule["symmetric"])
        rows = w.reshape(w.shape[0], -1) if rule.get("per_channel") and w.ndim > 1 else w.reshape(1, -1)
        if symmetric and bits == 1:
            scale = np.maximum(np.abs(rows).mean(axis=1), _EPS).astype(np.float32)
            zp = np.zeros_like(scale)
        else:
            lo, hi = _range(
                rows,
                bits,
                symmetric,
                str(rule.get("observer", "minmax")),
                float(rule.get("percentile", 99.9)),
            )
            scale, zp = _scale_zp(lo, hi, bits, symmetric)
        out = _fake(rows, scale[:, None], zp[:, None], bits, symmetric).reshape(w.shape)
    else:  # fixed grid: the stored scale and zero point
        qmin, qmax = qrange(stored.bits, bool(rule.get("symmetric", True)))
        scale, zp = stored.channel_scale(), stored.per_channel(stored.zero_points().astype(np.float32))
        if stored.bits == 1 and qmin == -1:
            out = np.where(w >= 0, np.float32(1), np.float32(-1)) * scale
        else:
            out = (np.clip(np.rint(w / scale) + zp, qmin, qmax) - zp) * scale
    out = out.astype(np.float32)
    return out if mask is None else out * mask
