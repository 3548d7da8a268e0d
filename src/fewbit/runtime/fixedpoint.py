"""Fixed-point requantization: an int32 accumulator to the next layer's integer input, no float.

Between two integer layers the float model computes `y = a * acc + b` per output channel (the
weight and activation scales, a BatchNorm with known statistics, a bias), a ReLU, and the next
layer's input quantization `q = clip(rint(y / s') + z')`. All of that is one affine map of the
accumulator followed by rounding and clipping, so it is written once as integers:

    q = clip(((acc * M + B) + 2**(S-1)) >> S) + z', lo, hi)      (int64, floor shift)

with `M` (|M| < 2**31), `B` (|B| <= 2**61) and `S` (0..62) per channel, derived from
`m = a / s'` and `o = b / s'` by `multiplier`. The end of the body (the embedding) uses the
same map with `s' = 2**-EMBED_FRAC_BITS`: a Q16 fixed-point embedding in int32.

The C export (`fewbit.deploy.c_export`) emits the same integer arithmetic and the same
derivation (double precision, the same operations in the same order: IEEE-754 makes the results
identical), so the numpy runtime and the C code agree bit for bit on integer embeddings.
"""

from __future__ import annotations

import math

import numpy as np

EMBED_FRAC_BITS = 16
M_LIMIT = 2**31 - 1  # |M|: acc * M stays below 2**62 for |acc| < 2**31
B_LIMIT = 2**61  # |B|: acc * M + B + 2**(S-1) stays below 2**63
MAX_SHIFT = 62
_CLAMP = float(2**62)  # m and o beyond this only saturate; clamping keeps the arithmetic finite


def round_half_up(x: float) -> int:
    """floor(x + 0.5) of a finite double (the C code computes the same with a cast)."""
    return math.floor(x + 0.5)


def _clamp(x: float) -> float:
    if x > _CLAMP:
        return _CLAMP
    if x < -_CLAMP:
        return -_CLAMP
    return x


def multiplier(m: float, o: float) -> tuple[int, int, int]:
    """`(M, S, B)` with `m * acc + o ~= (M * acc + B) / 2**S`, as precise as the limits allow.

    S is the largest shift (at most 62) for which |m| * 2**S stays below 2**31 - 1 and
    |o| * 2**S below 2**61; doubling is exact in floating point, so C and Python find the same S.
    """
    m, o = _clamp(float(m)), _clamp(float(o))
    shift, t = 0, 1.0
    while shift < MAX_SHIFT and abs(m) * (t * 2.0) < M_LIMIT and abs(o) * (t * 2.0) < B_LIMIT:
        t *= 2.0
        shift += 1
    big_m = min(max(round_half_up(m * t), -M_LIMIT), M_LIMIT)
    big_b = min(max(round_half_up(o * t), -B_LIMIT), B_LIMIT)
    return big_m, shift, big_b


def batchnorm_affine(
    count: int, sum1: int, sum2: int, scale: float, eps: float, gamma: float, beta: float
) -> tuple[float, float]:
    """`(a, b)` with BatchNorm(y) = a * acc + b, where `y = scale * acc (+ a bias BatchNorm cancels)`
    and the statistics of `acc` are `count` values summing to `sum1`, their squares to `sum2`."""
    mean = float(sum1) / float(count)
    var = float(sum2) / float(count) - mean * mean
    if var < 0.0:
        var = 0.0
    inv = 1.0 / math.sqrt(var * scale * scale + eps)
    a = _clamp(scale * inv * gamma)
    b = beta - mean * a
    return a, b


def range_qparams(lo: float, hi: float, qmin: int, qmax: int) -> tuple[np.float32, int]:
    """`(scale, zero point)` of an activation range, in float32 as a per-batch quantizer derives them
    (`fewbit.runtime.ops.InputQuant.qparams`): the range always holds 0."""
    lo32 = np.minimum(np.float32(lo), np.float32(0))
    hi32 = np.maximum(np.float32(hi), np.float32(0))
    scale = np.maximum((hi32 - lo32) / np.float32(qmax - qmin), np.float32(1e-8)).astype(np.float32)
    zero = int(np.clip(np.rint(-lo32 / scale), qmin, qmax))
    return scale, zero


def output_range(
    affine: list[tuple[float, float]], low: np.ndarray, high: np.ndarray, relu: bool
) -> tuple[float, float]:
    """The range of `a_c * acc + b_c` (ReLU'd when `relu`) over all channels c, given each channel's
    smallest and largest accumulator, in double precision (the C code does the same)."""
    lo, hi = 0.0, 0.0
    for (a, b), mn, mx in zip(affine, low.tolist(), high.tolist()):
        y1, y2 = a * float(mn) + b, a * float(mx) + b
        c_lo, c_hi = (y1, y2) if y1 < y2 else (y2, y1)
        if relu:
            c_lo, c_hi = max(c_lo, 0.0), max(c_hi, 0.0)
        lo, hi = min(lo, c_lo), max(hi, c_hi)
    return lo, hi


def requantize(
    acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, offset: np.ndarray, zero: int, lo: int, hi: int
) -> np.ndarray:
    """`clip(((acc * M + B) + 2**(S-1)) >> S) + zero, lo, hi) - zero` per channel (last axis), int64."""
    v = acc.astype(np.int64) * mult + offset
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    r = np.right_shift(v + half, shift)  # arithmetic shift of int64: floor division by 2**S
    return np.clip(r + zero, lo, hi) - zero
