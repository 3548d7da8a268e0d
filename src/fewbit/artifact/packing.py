"""Bit packing for the artifact: unsigned integers of 1..32 bits in a little-endian bit stream,
and sparse masks as a bitmap or an index list, whichever is smaller.

Numpy only: the torch-free runtime unpacks with these same functions.
"""

from __future__ import annotations

import math

import numpy as np

# Bit widths the artifact stores codes at; other widths of 1..8 pack too, but these are the ones
# compressed weights use (3 bits packs as a 3-bit stream, not rounded up to 4).
CODE_BITS = (1, 2, 3, 4, 8)


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


def encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """A boolean keep-mask as ("bitmap", bits) or ("indices", packed flat indices), whichever is smaller.

    The bitmap has one bit per element (1 = kept); the index list holds the kept positions in
    increasing order at `index_bits(mask.size)` bits each.
    """
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    kept = np.flatnonzero(flat)
    bitmap_bytes = packed_nbytes(flat.size, 1)
    index_bytes = packed_nbytes(kept.size, index_bits(flat.size))
    if index_bytes < bitmap_bytes:
        return "indices", pack_bits(kept, index_bits(flat.size))
    return "bitmap", np.packbits(flat, bitorder="little").tobytes()


def mask_nbytes(numel: int, kept: int) -> int:
    """Bytes `encode_mask` uses for a mask of `numel` elements of which `kept` are kept."""
    return min(packed_nbytes(numel, 1), packed_nbytes(kept, index_bits(numel)))


def decode_mask(fmt: str, data: bytes | np.ndarray, numel: int, kept: int) -> np.ndarray:
    """The flat boolean mask that `encode_mask` wrote; ValueError when the data is inconsistent."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if fmt == "bitmap":
        if raw.size != packed_nbytes(numel, 1):
            raise ValueError(f"mask bitmap has {raw.size} bytes for {numel} elements")
        flat = np.unpackbits(raw, count=numel, bitorder="little").astype(bool)
        if int(flat.sum()) != kept:
            raise ValueError(f"mask bitmap keeps {int(flat.sum())} elements, manifest says {kept}")
        return flat
    if fmt == "indices":
        if not 0 <= kept <= numel:
            raise ValueError(f"mask index list claims {kept} of {numel} elements")
        idx = unpack_bits(raw, index_bits(numel), kept)
        if kept and (idx[-1] >= numel or np.any(np.diff(idx) <= 0)):
            raise ValueError("mask index list is not strictly increasing inside the tensor")
        flat = np.zeros(numel, dtype=bool)
        flat[idx] = True
        return flat
    raise ValueError(f"unknown mask format {fmt!r}")


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32, got {bits!r}")
