"""Bit packing for the artifact: unsigned integers of 1..32 bits in a little-endian bit stream,
and sparse keep-masks as a bitmap, an index list or Rice-coded gaps, whichever is smallest.

Numpy only: the torch-free runtime unpacks with these same functions.

A mask of density p costs a bitmap 1 bit per element, while its entropy is H(p) bits (0.81 at
p = 0.25). Rice coding of the gaps (the number of pruned elements before each kept one) comes
within a few percent of H(p) for a mask whose kept positions are spread like a random draw,
which is what magnitude pruning leaves: a gap g is written as its quotient `g >> k` in unary
(that many 1 bits, then a 0) and its low `k` bits as they are, with `k` near log2 of the mean
gap. The two parts go into two streams (all remainders at `k` bits, then all unary codes), so a
decoder finds every codeword with one pass over the bits and numpy decodes without a loop.
"""

from __future__ import annotations

import math

import numpy as np


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that `count` values of `bits` bits occupy once packed."""
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers `values` (each < 2**bits) into a little-endian bit stream.

    Value i occupies bits [i*bits, (i+1)*bits) of the stream, least significant bit first;
    the last byte is padded with zeros. `unpack_bits(pack_bits(v, b), b, v.size)` returns `v`.
    """
    _check_bits(bits)
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return b""
    if flat.dtype.kind not in "ui":
        raise ValueError(f"pack_bits: values must be integers, got {flat.dtype}")
    if flat.min() < 0 or int(flat.max()) >= (1 << bits):
        raise ValueError(f"pack_bits: values must lie in [0, {(1 << bits) - 1}] for bits={bits}")
    if bits == 8:
        return flat.astype(np.uint8).tobytes()
    wide = flat.astype(np.uint64)
    shifts = np.arange(bits, dtype=np.uint64)
    stream = ((wide[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # [n, bits], LSB first
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | np.ndarray, bits: int, count: int) -> np.ndarray:
    """The `count` unsigned integers packed in `data` at `bits` bits each (int64 `[count]`).

    Raises ValueError when `data` is not exactly `packed_nbytes(count, bits)` long.
    """
    _check_bits(bits)
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.size != packed_nbytes(count, bits):
        raise ValueError(f"unpack_bits: {raw.size} bytes for {count} values of {bits} bits")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if bits == 8:
        return raw.astype(np.int64)
    stream = np.unpackbits(raw, count=count * bits, bitorder="little").reshape(count, bits)
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    return stream.astype(np.int64) @ weights


def index_bits(numel: int) -> int:
    """Bits per entry of an index list over a tensor of `numel` elements."""
    return max(1, math.ceil(math.log2(max(numel, 2))))


MASK_FORMATS = ("bitmap", "indices", "rice")


def encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """A boolean keep-mask as ("bitmap" | "indices" | "rice", bytes), whichever is smallest.

    The bitmap has one bit per element (1 = kept); the index list holds the kept positions in
    increasing order at `index_bits(mask.size)` bits each; the Rice code holds the gaps between
    kept positions (`rice_encode`). On a tie the earlier format in that order wins.
    """
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    kept = np.flatnonzero(flat)
    candidates = [
        ("bitmap", packed_nbytes(flat.size, 1)),
        ("indices", packed_nbytes(kept.size, index_bits(flat.size))),
    ]
    k, rice_bytes = best_rice_parameter(kept, flat.size)
    candidates.append(("rice", rice_bytes))
    fmt = min(candidates, key=lambda c: c[1])[0]  # min keeps the first of equal sizes
    if fmt == "indices":
        return "indices", pack_bits(kept, index_bits(flat.size))
    if fmt == "rice":
        return "rice", rice_encode(kept, k)
    return "bitmap", np.packbits(flat, bitorder="little").tobytes()


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Pruned elements before each kept position (positions strictly increasing)."""
    positions = np.asarray(positions, dtype=np.int64)
    return np.diff(positions, prepend=-1) - 1


def max_rice_parameter(numel: int) -> int:
    """The largest Rice parameter a mask over `numel` elements may use (a gap is < numel)."""
    return index_bits(numel)


def rice_nbytes(positions: np.ndarray, k: int) -> int:
    """Bytes `rice_encode(positions, k)` takes: one byte for k, the remainders, the unary quotients."""
    gaps = _gaps(positions)
    unary_bits = int((gaps >> k).sum()) + gaps.size
    return 1 + (packed_nbytes(gaps.size, k) if k else 0) + packed_nbytes(unary_bits, 1)


def best_rice_parameter(positions: np.ndarray, numel: int) -> tuple[int, int]:
    """(k, bytes) of the Rice parameter that codes these kept positions in the fewest bytes.

    The optimum lies near log2 of the mean gap, (numel - kept) / kept, but the exact byte count
    is cheap to evaluate, so every k from 0 to `max_rice_parameter(numel)` is tried.
    """
    sizes = [(rice_nbytes(positions, k), k) for k in range(max_rice_parameter(numel) + 1)]
    nbytes, k = min(sizes)
    return k, nbytes


def rice_encode(positions: np.ndarray, k: int) -> bytes:
    """Kept positions (strictly increasing) as Rice-coded gaps with parameter `k`.

    Layout: one byte `k`; the gaps' low `k` bits, packed (`pack_bits`; absent when k = 0); then
    the quotients `gap >> k` in unary, LSB first (q ones, then a zero), padded with ones.
    """
    gaps = _gaps(positions)
    if gaps.size and gaps.min() < 0:
        raise ValueError("rice_encode: positions must be strictly increasing from 0")
    if not 0 <= k <= 31:
        raise ValueError(f"rice_encode: k must be in 0..31, got {k}")
    quotients = gaps >> k
    remainders = pack_bits(gaps & ((1 << k) - 1), k) if k and gaps.size else b""
    ends = np.cumsum(quotients + 1) - 1  # the terminating zero of each unary code
    # padded with ones, so no extra terminator appears: a reader told a wrong count finds out
    unary = np.ones(8 * packed_nbytes(int(ends[-1]) + 1, 1) if gaps.size else 0, dtype=np.uint8)
    unary[ends] = 0
    return bytes([k]) + remainders + np.packbits(unary, bitorder="little").tobytes()


def rice_decode(data: bytes | np.ndarray, numel: int, kept: int) -> np.ndarray:
    """The kept positions `[kept]` (int64) that `rice_encode` wrote for a mask over `numel` elements.

    Trusts nothing: the parameter, the stream lengths, the padding and every position are
    checked, the work is bounded by `numel` whatever the data claim, and any inconsistency is a
    ValueError.
    """
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.size < 1:
        raise ValueError("rice mask has no parameter byte")
    k = int(raw[0])
    if k > max_rice_parameter(numel):
        raise ValueError(f"rice mask parameter {k} is larger than a {numel}-element tensor needs")
    rem_bytes = packed_nbytes(kept, k) if k else 0
    unary = raw[1 + rem_bytes :]
    if raw.size < 1 + rem_bytes:
        raise ValueError(f"rice mask has {raw.size} bytes, its {kept} remainders alone need {1 + rem_bytes}")
    # Every unary bit is a terminator (kept of them) or stands for 2**k pruned elements: a valid
    # stream has at most numel bits, which bounds the work below.
    if unary.size > packed_nbytes(numel, 1):
        raise ValueError(f"rice mask stream of {unary.size} bytes is longer than {numel} elements need")
    if kept == 0:
        if unary.size:
            raise ValueError("rice mask of no kept elements has trailing bytes")
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(unary, bitorder="little")
    ends = np.flatnonzero(bits == 0)
    if ends.size < kept:
        raise ValueError(f"rice mask codes {ends.size} gaps, the tensor keeps {kept}")
    ends = ends[:kept]
    used = int(ends[-1]) + 1
    if unary.size != packed_nbytes(used, 1) or not bits[used:].all():
        raise ValueError("rice mask stream has trailing bytes or padding that is not all ones")
    quotients = np.diff(ends, prepend=-1) - 1
    if quotients.max() > (numel >> k):
        raise ValueError("rice mask gap points past the end of the tensor")
    remainders = unpack_bits(raw[1 : 1 + rem_bytes], k, kept) if k else np.zeros(kept, np.int64)
    positions = np.cumsum((quotients << k) + remainders + 1) - 1
    if positions[-1] >= numel:
        raise ValueError("rice mask position points past the end of the tensor")
    return positions


def decode_mask(fmt: str, data: bytes | np.ndarray, numel: int, kept: int) -> np.ndarray:
    """The flat boolean mask that `encode_mask` wrote; ValueError when the data is inconsistent."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if not 0 <= kept <= numel:
        raise ValueError(f"mask claims {kept} of {numel} elements")
    if fmt == "bitmap":
        if raw.size != packed_nbytes(numel, 1):
            raise ValueError(f"mask bitmap has {raw.size} bytes for {numel} elements")
        flat = np.unpackbits(raw, count=numel, bitorder="little").astype(bool)
        if int(flat.sum()) != kept:
            raise ValueError(f"mask bitmap keeps {int(flat.sum())} elements, manifest says {kept}")
        return flat
    if fmt == "indices":
        idx = unpack_bits(raw, index_bits(numel), kept)
        if kept and (idx[-1] >= numel or np.any(np.diff(idx) <= 0)):
            raise ValueError("mask index list is not strictly increasing inside the tensor")
    elif fmt == "rice":
        idx = rice_decode(raw, numel, kept)
    else:
        raise ValueError(f"unknown mask format {fmt!r}")
    flat = np.zeros(numel, dtype=bool)
    flat[idx] = True
    return flat


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32, got {bits!r}")
