"""`convert`: fake-compressed layers to packed containers, the form that export stores.

A `PackedTensor` is a small declarative container: bit-packed codes of the kept elements, the
scales and zero points (affine grid) or a codebook, and the keep-mask as a bitmap or an index
list, whichever is smaller (`fewbit.artifact.packing`). Its `nbytes` is exactly the length of
its `payload()`, which is what `size_report` counts. Dequantizing gives bit for bit the weight
the fake-compressed layer used, so a converted model computes what the trained one did.

Stored forms (all little-endian): codes at `bits` bits each (affine: q - qmin, i.e. offset
binary for symmetric grids and plain q for asymmetric ones; 1-bit symmetric: 1 = +scale;
codebook: the centroid index; float: float32 values); scale float32 per channel (axis 0) or
per tensor; zero point uint8 per channel or tensor (asymmetric only); codebook float32.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fewbit.artifact.packing import decode_mask, encode_mask, pack_bits, packed_nbytes, unpack_bits
from fewbit.compress.cluster import Codebook
from fewbit.compress.layers import CompressedBatchNorm, CompressedMixin, set_submodule
from fewbit.compress.quantize import ActQuant, WeightQuant, dequantize, qrange, quantize_codes, weight_qparams
from fewbit.models.layers import BatchNorm

ENCODINGS = ("affine", "codebook", "float")


@dataclasses.dataclass(frozen=True, eq=False)
class PackedTensor:
    """A compressed tensor as stored: codes of its kept elements plus what decodes them.

    `codes` holds `kept` values of `bits` bits, bit-packed (uint8 bytes). `encoding` is
    `affine` (value = q * scale, or (q - zero_point) * scale when asymmetric), `codebook`
    (value = codebook[code]) or `float` (codes are raw float32). `axis` is 0 when `scale` /
    `zero_point` are per output channel, None when per tensor. `mask` holds the keep-mask in
    `mask_format` (`bitmap` or `indices`), or is None for a dense tensor.
    """

    shape: tuple[int, ...]
    encoding: str
    bits: int
    codes: torch.Tensor  # uint8 [nbytes of the packed codes]
    kept: int
    scale: torch.Tensor | None = None  # float32 [C] or [1]
    zero_point: torch.Tensor | None = None  # uint8 [C] or [1]; None when symmetric
    axis: int | None = None
    symmetric: bool = True
    mask_format: str | None = None
    mask: torch.Tensor | None = None  # uint8 bytes of the encoded mask
    codebook: torch.Tensor | None = None  # float32 [k]

    @property
    def numel(self) -> int:
        """Elements of the dense tensor."""
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def sparsity(self) -> float:
        """Fraction of elements not stored (pruned)."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0

    def parts(self) -> list[tuple[str, bytes]]:
        """The stored pieces in payload order: codes, scale, zero_point, mask, codebook."""
        pieces = [("codes", self.codes.numpy().tobytes())]
        if self.scale is not None:
            pieces.append(("scale", self.scale.to(torch.float32).numpy().astype("<f4").tobytes()))
        if self.zero_point is not None:
            pieces.append(("zero_point", self.zero_point.numpy().astype(np.uint8).tobytes()))
        if self.mask is not None:
            pieces.append(("mask", self.mask.numpy().tobytes()))
        if self.codebook is not None:
            pieces.append(("codebook", self.codebook.to(torch.float32).numpy().astype("<f4").tobytes()))
        return pieces

    def payload(self) -> bytes:
        """The stored bytes (concatenated `parts`); `len(payload()) == nbytes`."""
        return b"".join(p for _, p in self.parts())

    @property
    def nbytes(self) -> int:
        """Exact stored size in bytes."""
        return sum(len(p) for _, p in self.parts())

    def meta(self) -> dict[str, Any]:
        """What a reader needs besides the payload to rebuild this tensor (JSON-able)."""
        return {
            "shape": list(self.shape),
            "encoding": self.encoding,
            "bits": self.bits,
            "kept": self.kept,
            "axis": self.axis,
            "symmetric": self.symmetric,
            "mask_format": self.mask_format,
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
        for name in ("codes", "scale", "zero_point", "mask", "codebook"):
            if name in sizes:
                views[name] = payload[offset : offset + sizes[name]]
                offset += sizes[name]

        def u8(name: str) -> torch.Tensor | None:
            return _u8(views[name]) if name in views else None

        def f32(name: str) -> torch.Tensor | None:
            return (
                torch.from_numpy(np.frombuffer(views[name], dtype="<f4").astype(np.float32))
                if name in views
                else None
            )

        codes = u8("codes")
        assert codes is not None
        return cls(
            shape=tuple(meta["shape"]),
            encoding=meta["encoding"],
            bits=meta["bits"],
            codes=codes,
            kept=meta["kept"],
            scale=f32("scale"),
            zero_point=u8("zero_point"),
            axis=meta["axis"],
            symmetric=meta["symmetric"],
            mask_format=meta["mask_format"],
            mask=u8("mask"),
            codebook=f32("codebook"),
        )

    def keep_mask(self) -> torch.Tensor:
        """Boolean `shape` tensor, True where an element is stored."""
        if self.mask is None:
            return torch.ones(self.shape, dtype=torch.bool)
        assert self.mask_format is not None
        flat = decode_mask(self.mask_format, self.mask.numpy(), self.numel, self.kept)
        return torch.from_numpy(flat.copy()).reshape(self.shape)

    def int_codes(self) -> torch.Tensor:
        """The stored unsigned codes `[kept]` (int64); for the float encoding, the float32 values."""
        raw = self.codes.numpy()
        if self.encoding == "float":
            return torch.from_numpy(np.frombuffer(raw.tobytes(), dtype="<f4").astype(np.float32))
        return torch.from_numpy(unpack_bits(raw, self.bits, self.kept))

    def to_float(self) -> torch.Tensor:
        """The dense float32 tensor these codes stand for (zeros where pruned)."""
        codes = self.int_codes()
        if self.encoding == "float":
            values = codes
        elif self.encoding == "codebook":
            assert self.codebook is not None
            values = self.codebook[codes]
        else:
            values = self._dequantize(codes)
        out = torch.zeros(self.numel, dtype=torch.float32)
        out[self.keep_mask().reshape(-1)] = values
        return out.reshape(self.shape)

    dequantize = to_float

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        assert self.scale is not None
        qmin, _ = qrange(self.bits, self.symmetric)
        if self.symmetric and self.bits == 1:
            q = codes.to(torch.float32) * 2.0 - 1.0
        else:
            q = (codes + qmin).to(torch.float32)
        scale = self._per_element(self.scale)
        zp = self._per_element(self.zero_point.to(torch.float32)) if self.zero_point is not None else None
        return dequantize(q, scale, zp if zp is not None else torch.zeros(()), self.bits, self.symmetric)

    def _per_element(self, t: torch.Tensor) -> torch.Tensor:
        """A per-channel `[C]` tensor repeated for each kept element (row-major order)."""
        if t.numel() == 1:
            return t.reshape(1).expand(self.kept)
        keep = self.keep_mask().reshape(self.shape[0], -1)
        return t.repeat_interleave(keep.sum(1))

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bits: int = 8,
        *,
        symmetric: bool = True,
        axis: int | None = 0,
        observer: str = "minmax",
        mask: torch.Tensor | None = None,
    ) -> PackedTensor:
        """Quantize a float tensor to `bits` on the affine grid (per channel when axis=0), maybe masked."""
        scale, zp = weight_qparams(weight, bits, symmetric, axis == 0, observer, 99.9)
        return cls.from_affine(weight, bits, scale, zp, symmetric=symmetric, mask=mask)

    @classmethod
    def from_affine(
        cls,
        weight: torch.Tensor,
        bits: int,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        *,
        symmetric: bool,
        mask: torch.Tensor | None = None,
    ) -> PackedTensor:
        """Pack `weight` on the grid of `scale` `[C]`/`[1]` and `zero_point` (kept elements only)."""
        w = weight.detach().float().cpu()
        view = (-1,) + (1,) * (w.dim() - 1)
        s, z = scale.detach().float().cpu(), zero_point.detach().float().cpu()
        q = quantize_codes(w, s.reshape(view), z.reshape(view), bits, symmetric)
        qmin, _ = qrange(bits, symmetric)
        unsigned = ((q + 1) / 2) if symmetric and bits == 1 else (q - qmin)
        keep, fmt, mask_bytes = _mask_parts(mask, w)
        codes = unsigned.reshape(-1)[keep.reshape(-1)].round().to(torch.int64).numpy()
        return cls(
            shape=tuple(w.shape),
            encoding="affine",
            bits=bits,
            codes=_u8(pack_bits(codes, bits)),
            kept=int(keep.sum()),
            scale=s.reshape(-1).clone(),
            zero_point=None if symmetric else z.reshape(-1).round().to(torch.uint8),
            axis=0 if s.numel() > 1 else None,
            symmetric=symmetric,
            mask_format=fmt,
            mask=mask_bytes,
        )

    @classmethod
    def from_codebook(
        cls, weight: torch.Tensor, codebook: torch.Tensor, bits: int, mask: torch.Tensor | None = None
    ) -> PackedTensor:
        """Pack `weight` as indices of its nearest `codebook` entries (`bits` bits each)."""
        w = weight.detach().float().cpu()
        book = codebook.detach().float().cpu().clone()
        idx = (w.unsqueeze(-1) - book).abs().argmin(-1)
        keep, fmt, mask_bytes = _mask_parts(mask, w)
        codes = idx.reshape(-1)[keep.reshape(-1)].numpy()
        return cls(
            shape=tuple(w.shape),
            encoding="codebook",
            bits=bits,
            codes=_u8(pack_bits(codes, bits)),
            kept=int(keep.sum()),
            mask_format=fmt,
            mask=mask_bytes,
            codebook=book,
        )

    @classmethod
    def from_dense(cls, weight: torch.Tensor, mask: torch.Tensor | None = None) -> PackedTensor:
        """Store `weight` as float32 values of its kept elements."""
        w = weight.detach().float().cpu()
        keep, fmt, mask_bytes = _mask_parts(mask, w)
        values = w.reshape(-1)[keep.reshape(-1)].numpy().astype("<f4")
        return cls(
            shape=tuple(w.shape),
            encoding="float",
            bits=32,
            codes=_u8(values.tobytes()),
            kept=int(keep.sum()),
            mask_format=fmt,
            mask=mask_bytes,
        )


def _u8(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def _mask_parts(
    mask: torch.Tensor | None, w: torch.Tensor
) -> tuple[torch.Tensor, str | None, torch.Tensor | None]:
    if mask is None:
        return torch.ones(w.shape, dtype=torch.bool), None, None
    keep = mask.detach().cpu().reshape(w.shape) > 0
    fmt, data = encode_mask(keep.numpy())
    return keep, fmt, _u8(data)


@dataclasses.dataclass(frozen=True)
class PackedAct:
    """Quantization of a layer's input activations: `bits`, float32 `scale`, uint8 `zero_point`.

    `scale == 0` means the quantizer was never calibrated: each batch uses its own min-max range.
    """

    bits: int
    scale: float
    zero_point: int

    nbytes = 5  # float32 scale + uint8 zero point

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 0:
            scale, zp = (
                torch.tensor(self.scale, dtype=x.dtype),
                torch.tensor(float(self.zero_point), dtype=x.dtype),
            )
        else:
            from fewbit.compress.quantize import scale_zero_point

            scale, zp = scale_zero_point(x.amin().clamp(max=0.0), x.amax().clamp(min=0.0), self.bits, False)
        return dequantize(quantize_codes(x, scale, zp, self.bits, False), scale, zp, self.bits, False)


class PackedLayer(nn.Module):
    """A Linear or Conv2d whose weight is a `PackedTensor` (decoded on each forward); float32 bias."""

    def __init__(
        self,
        kind: str,
        weight: PackedTensor,
        bias: torch.Tensor | None,
        act: PackedAct | None,
        conv: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind  # "linear" | "conv2d"
        self.packed_weight = weight
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.act = act
        self.conv = dict(conv or {})

    @property
    def nbytes(self) -> int:
        """Stored bytes: packed weight + float32 bias + activation quantization parameters."""
        bias = 0 if self.bias is None else 4 * self.bias.numel()
        return self.packed_weight.nbytes + bias + (self.act.nbytes if self.act else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act is not None:
            x = self.act(x)
        w = self.packed_weight.to_float().to(x.device)
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        return F.conv2d(x, w, self.bias, **self.conv)

    def extra_repr(self) -> str:
        p = self.packed_weight
        return (
            f"{self.kind}, shape={p.shape}, {p.encoding} {p.bits}-bit, sparsity={p.sparsity:.3f}, "
            f"{self.nbytes} B"
        )


@torch.no_grad()
def pack_layer(layer: Any) -> PackedLayer:
    """The packed form of one compressed Linear/Conv2d."""
    weight = layer.weight
    mask_module = getattr(layer, "cq_mask", None)
    mask = None if mask_module is None else mask_module.mask
    value = [(a, t) for a, t in layer.transforms() if isinstance(t, (WeightQuant, Codebook))]
    if value:
        attr, transform = value[0]
        seen = layer.compress_weight(weight, upto=attr)
        if isinstance(transform, WeightQuant):
            scale, zp = transform.qparams(seen)
            packed = PackedTensor.from_affine(
                seen, transform.bits, scale, zp, symmetric=transform.symmetric, mask=mask
            )
        else:
            packed = PackedTensor.from_codebook(seen, transform.centroids, transform.bits, mask=mask)
    else:
        packed = PackedTensor.from_dense(layer.compress_weight(weight), mask=mask)
    act_module = getattr(layer, "cq_act", None)
    act = None
    if isinstance(act_module, ActQuant):
        scale, zp = act_module.qparams()
        act = PackedAct(act_module.bits, float(scale.abs()), int(zp))
    bias = layer.compress_bias(layer.bias)
    if isinstance(layer, nn.Conv2d):
        conv = {
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "groups": layer.groups,
        }
        return PackedLayer("conv2d", packed, bias, act, conv)
    return PackedLayer("linear", packed, bias, act)


@torch.no_grad()
def convert(model: nn.Module) -> nn.Module:
    """A copy of `model` with every compressed layer replaced by a `PackedLayer`.

    Compressed BatchNorms become plain BatchNorms with the pruned channels' scale/shift zeroed.
    The converted model's outputs equal the fake-compressed model's.
    """
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, CompressedMixin):
            set_submodule(out, name, pack_layer(module))
        elif isinstance(module, CompressedBatchNorm):
            bn = BatchNorm(module.channels, module.eps)
            weight, bias = module.compress_params(module.weight, module.bias)
            bn.weight.data.copy_(weight)
            bn.bias.data.copy_(bias)
            set_submodule(out, name, bn)
    return out


def packed_layers(model: nn.Module) -> list[tuple[str, PackedLayer]]:
    """`(name, layer)` of every PackedLayer of a converted model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PackedLayer)]


__all__ = [
    "PackedAct",
    "PackedLayer",
    "PackedTensor",
    "convert",
    "pack_layer",
    "packed_layers",
    "packed_nbytes",
]
