"""`PackedTensor`: a compressed tensor as it is stored, the one type that `fewbit.compress.convert`
builds, `fewbit.deploy` writes into the artifact and `fewbit.runtime` computes with (numpy only).

What is stored, all of it visible as fields:

- `codes`: the kept elements' codes, `bits` each, in one little-endian bit stream
  (`fewbit.artifact.packing.pack_bits`). A stored code `u` stands for the integer code
  `u * code_step + code_min`: `code_min` is the smallest kept code, so a symmetric 4-bit grid
  stores `q + 8` and a 1-bit sign grid {-1, +1} stores one bit with `code_step = 2`.
- `affine` encoding: value = `(code - zero_point) * scale`, `scale` float32 and `zero_point` int
  per tensor (`[1]`) or per channel along `axis`; `zero_point` is None when it is 0 everywhere.
- `codebook` encoding: value = `codebook[code]`.
- `float` encoding: `codes` are the kept values as float32 (a pruned float layer).
- the keep-mask: `mask_format` and `mask_data` (`fewbit.artifact.packing.encode_mask`); pruned
  elements are exactly 0. None for a dense tensor.

`nbytes` is exactly what the artifact's payload holds for an affine or codebook tensor, so
`fewbit.compress.size_report` counts the file's bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np

from fewbit.artifact.packing import decode_mask, encode_mask, pack_bits, unpack_bits


@dataclasses.dataclass(frozen=True, eq=False)
class PackedTensor:
    """A compressed tensor: packed codes of its kept elements and what decodes them (see module doc).

    Build one with `from_codes` (integer codes on an affine grid or codebook indices) or
    `from_values` (float32 values); `dequantize()` gives the float32 tensor it stands for.
    `symmetric` records the grid's kind for re-quantizing an adapted copy (it is not in the file:
    the manifest's `weight_quant` rule carries it).
    """

    shape: tuple[int, ...]
    bits: int
    codes: bytes
    kept: int
    encoding: str = "affine"
    code_min: int = 0
    code_step: int = 1
    scale: np.ndarray | None = None  # float32 [C] or [1]; affine only
    zero_point: np.ndarray | None = None  # int64 [C] or [1]; None when all zero
    axis: int | None = None
    symmetric: bool = True
    mask_format: str | None = None
    mask_data: bytes | None = None
    codebook: np.ndarray | None = None  # float32 [k]

    # ------------------------------------------------------------------------------ building

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        bits: int,
        *,
        scale: np.ndarray | None = None,
        zero_point: np.ndarray | None = None,
        axis: int | None = None,
        mask: np.ndarray | None = None,
        codebook: np.ndarray | None = None,
        symmetric: bool = True,
    ) -> PackedTensor:
        """Pack integer `codes` (full shape; entries where `mask` is False are dropped).

        Without `codebook` the codes lie on an affine grid: value = (code - zero_point) * scale,
        `scale`/`zero_point` of length 1 or `shape[axis]`. With it, codes index the codebook.
        ValueError when the kept codes span more than `bits` bits hold (a 1-bit tensor may hold
        two values any distance apart, e.g. {-1, +1}).
        """
        codes = np.asarray(codes)
        shape = tuple(int(d) for d in codes.shape)
        flat = codes.reshape(-1).astype(np.int64)
        mask_format = mask_data = None
        if mask is not None:
            keep = np.asarray(mask, dtype=bool).reshape(-1)
            if keep.size != flat.size:
                raise ValueError(f"mask has {keep.size} elements, codes {flat.size}")
            mask_format, mask_data = encode_mask(keep)
            flat = flat[keep]
        lo = int(flat.min()) if flat.size else 0
        hi = int(flat.max()) if flat.size else 0
        step = 1
        if hi - lo >= (1 << bits):
            if bits == 1 and np.all((flat == lo) | (flat == hi)):
                step = hi - lo  # sign codes {-1, +1}: one bit picks the end
            else:
                raise ValueError(f"codes span [{lo}, {hi}], more than {bits} bits hold")
        if codebook is not None:
            return cls(
                shape=shape,
                bits=int(bits),
                codes=pack_bits((flat - lo) // step, bits),
                kept=int(flat.size),
                encoding="codebook",
                code_min=lo,
                code_step=step,
                mask_format=mask_format,
                mask_data=mask_data,
                codebook=np.ascontiguousarray(codebook, dtype=np.float32).reshape(-1),
                symmetric=symmetric,
            )
        if scale is None:
            raise ValueError("an affine tensor needs a scale")
        zp = None if zero_point is None else np.asarray(zero_point, dtype=np.int64).reshape(-1)
        return cls(
            shape=shape,
            bits=int(bits),
            codes=pack_bits((flat - lo) // step, bits),
            kept=int(flat.size),
            code_min=lo,
            code_step=step,
            scale=np.ascontiguousarray(scale, dtype=np.float32).reshape(-1),
            zero_point=zp if zp is not None and zp.any() else None,
            axis=axis,
            symmetric=symmetric,
            mask_format=mask_format,
            mask_data=mask_data,
        )

    @classmethod
    def from_values(cls, values: np.ndarray, mask: np.ndarray | None = None) -> PackedTensor:
        """Store float32 `values` of the kept elements (the `float` encoding)."""
        values = np.asarray(values, dtype=np.float32)
        flat = values.reshape(-1)
        mask_format = mask_data = None
        if mask is not None:
            keep = np.asarray(mask, dtype=bool).reshape(-1)
            mask_format, mask_data = encode_mask(keep)
            flat = flat[keep]
        return cls(
            shape=tuple(int(d) for d in values.shape),
            bits=32,
            codes=np.ascontiguousarray(flat, dtype="<f4").tobytes(),
            kept=int(flat.size),
            encoding="float",
            mask_format=mask_format,
            mask_data=mask_data,
        )

    # ------------------------------------------------------------------------------ reading

    @property
    def numel(self) -> int:
        """Elements of the dense tensor."""
        return int(math.prod(self.shape))

    @property
    def sparsity(self) -> float:
        """Fraction of elements not stored (pruned)."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0

    @functools.cached_property
    def mask(self) -> np.ndarray | None:
        """Boolean keep-mask of `shape` (True where an element is stored), or None when dense."""
        if self.mask_format is None or self.mask_data is None:
            return None
        return decode_mask(self.mask_format, self.mask_data, self.numel, self.kept).reshape(self.shape)

    def keep_mask(self) -> np.ndarray:
        """Boolean `shape` array, True where an element is stored (all True when dense)."""
        return np.ones(self.shape, dtype=bool) if self.mask is None else self.mask

    def stored_codes(self) -> np.ndarray:
        """The kept elements' integer codes `[kept]` (int64), `code_min` and `code_step` applied."""
        if self.encoding == "float":
            raise ValueError("a float tensor has values, not codes")
        return unpack_bits(self.codes, self.bits, self.kept) * self.code_step + self.code_min

    def code_array(self) -> np.ndarray:
        """Integer codes of every element (int64, full shape; 0 where pruned)."""
        full = np.zeros(self.numel, dtype=np.int64)
        full[self.keep_mask().reshape(-1)] = self.stored_codes()
        return full.reshape(self.shape)

    def per_channel(self, values: np.ndarray) -> np.ndarray:
        """A per-tensor `[1]` or per-channel `[C]` array shaped to broadcast against the tensor."""
        values = np.asarray(values)
        if values.size == 1 or self.axis is None:
            return values.reshape(())
        view = [1] * len(self.shape)
        view[self.axis] = -1
        return values.reshape(view)

    def zero_points(self) -> np.ndarray:
        """Zero points (int64 `[1]` or `[C]`; `[0]` when the grid has none)."""
        return np.zeros(1, np.int64) if self.zero_point is None else self.zero_point

    def integer_weights(self) -> np.ndarray:
        """`code - zero_point` with pruned entries 0 (int64, full shape); value = this x scale."""
        q = self.code_array() - self.per_channel(self.zero_points())
        if self.mask is not None:
            q = np.where(self.mask, q, 0)
        return q.astype(np.int64)

    def channel_scale(self) -> np.ndarray:
        """float32 scale broadcastable against the tensor."""
        if self.scale is None:
            raise ValueError(f"a {self.encoding} tensor has no scale")
        return self.per_channel(self.scale.astype(np.float32))

    def dequantize(self) -> np.ndarray:
        """The float32 values this tensor stands for (exactly 0 where pruned)."""
        if self.encoding == "float":
            out = np.zeros(self.numel, dtype=np.float32)
            out[self.keep_mask().reshape(-1)] = np.frombuffer(self.codes, dtype="<f4")
            return out.reshape(self.shape)
        if self.encoding == "codebook":
            assert self.codebook is not None
            w = self.codebook.astype(np.float32)[self.code_array()]
            if self.mask is not None:
                w = np.where(self.mask, w, np.float32(0))
            return w.astype(np.float32)
        return (self.integer_weights().astype(np.float32) * self.channel_scale()).astype(np.float32)

    # ------------------------------------------------------------------------------ bytes

    def parts(self) -> list[tuple[str, bytes]]:
        """The stored pieces in payload order: codes, mask, codebook, scale, zero_point."""
        pieces = [("codes", bytes(self.codes))]
        if self.mask_data is not None:
            pieces.append(("mask", bytes(self.mask_data)))
        if self.codebook is not None:
            pieces.append(("codebook", np.ascontiguousarray(self.codebook, dtype="<f4").tobytes()))
        if self.scale is not None:
            pieces.append(("scale", np.ascontiguousarray(self.scale, dtype="<f4").tobytes()))
        if self.zero_point is not None:
            pieces.append(("zero_point", zero_point_bytes(self.zero_point)[1]))
        return pieces

    def payload(self) -> bytes:
        """The stored bytes (concatenated `parts`); `len(payload()) == nbytes`."""
        return b"".join(p for _, p in self.parts())

    @property
    def nbytes(self) -> int:
        """Exact stored size in bytes."""
        return sum(len(p) for _, p in self.parts())

    def meta(self) -> dict[str, Any]:
        """What a reader needs besides `payload()` to rebuild this tensor (JSON-able)."""
        return {
            "shape": list(self.shape),
            "encoding": self.encoding,
            "bits": self.bits,
            "kept": self.kept,
            "code_min": self.code_min,
            "code_step": self.code_step,
            "axis": self.axis,
            "symmetric": self.symmetric,
            "mask_format": self.mask_format,
            "zp_dtype": None if self.zero_point is None else zero_point_bytes(self.zero_point)[0],
            "parts": {name: len(data) for name, data in self.parts()},
        }

    @classmethod
    def from_payload(cls, meta: dict[str, Any], payload: bytes) -> PackedTensor:
        """Rebuild from `meta()` and `payload()` (the inverse of those two)."""
        sizes = meta["parts"]
        if sum(sizes.values()) != len(payload):
            raise ValueError(f"payload has {len(payload)} bytes, meta says {sum(sizes.values())}")
        views: dict[str, bytes] = {}
        offset = 0
        for name in ("codes", "mask", "codebook", "scale", "zero_point"):
            if name in sizes:
                views[name] = payload[offset : offset + sizes[name]]
                offset += sizes[name]
        zero_point = None
        if "zero_point" in views:
            wide = meta["zp_dtype"] == "i32"
            zero_point = np.frombuffer(views["zero_point"], dtype="<i4" if wide else np.uint8).astype(np.int64)
        f32 = {k: np.frombuffer(views[k], dtype="<f4").astype(np.float32) for k in ("codebook", "scale") if k in views}
        return cls(
            shape=tuple(meta["shape"]),
            bits=meta["bits"],
            codes=views["codes"],
            kept=meta["kept"],
            encoding=meta["encoding"],
            code_min=meta["code_min"],
            code_step=meta["code_step"],
            scale=f32.get("scale"),
            zero_point=zero_point,
            axis=meta["axis"],
            symmetric=meta["symmetric"],
            mask_format=meta["mask_format"],
            mask_data=views.get("mask"),
            codebook=f32.get("codebook"),
        )


def zero_point_bytes(zero_point: np.ndarray) -> tuple[str, bytes]:
    """`("u8", bytes)` for zero points in 0..255 (grids of <= 8 bits), else `("i32", bytes)`."""
    zp = np.asarray(zero_point, dtype=np.int64).reshape(-1)
    if zp.size == 0 or (zp.min() >= 0 and zp.max() <= 255):
        return "u8", zp.astype(np.uint8).tobytes()
    return "i32", zp.astype("<i4").tobytes()
