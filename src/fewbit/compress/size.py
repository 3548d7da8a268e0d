"""`size_report`: per-layer parameters, bits, sparsity and exact stored bytes, with totals.

Bytes are those of the packed form (`convert`): packed codes of kept weights + scales + zero
points + mask (bitmap or index list, whichever is smaller) + codebook + float32 bias + 5 bytes
of activation quantization parameters; layers without compression count 4 bytes a parameter.
`ratio` is float32 bytes / stored bytes (how many times smaller than float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from fewbit.artifact.format import versus_float32
from fewbit.compress.convert import PackedLayer, pack_layer
from fewbit.compress.layers import CompressedBatchNorm, CompressedMixin, is_compression_name


@dataclasses.dataclass(frozen=True)
class LayerSize:
    """One layer's accounting."""

    name: str
    kind: str
    params: int
    bits: int
    sparsity: float
    bytes: int
    float32_bytes: int
    encoding: str
    mask_format: str | None = None
    act_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """Totals and per-layer rows.

    `to_dict()` is the JSON contract: `bytes`, `float32_bytes`, `ratio`, `layers`.
    """

    layers: tuple[LayerSize, ...]

    @property
    def bytes(self) -> int:
        """Total stored bytes."""
        return sum(layer.bytes for layer in self.layers)

    @property
    def float32_bytes(self) -> int:
        """Total bytes the same parameters take in float32."""
        return sum(layer.float32_bytes for layer in self.layers)

    @property
    def params(self) -> int:
        """Total parameters."""
        return sum(layer.params for layer in self.layers)

    @property
    def ratio(self) -> float:
        """float32 bytes / stored bytes."""
        return self.float32_bytes / self.bytes if self.bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        """`{"bytes", "float32_bytes", "ratio", "params", "layers": [...]}`."""
        return {
            "bytes": self.bytes,
            "float32_bytes": self.float32_bytes,
            "ratio": round(self.ratio, 4),
            "params": self.params,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def rows(self) -> tuple[list[str], list[list[Any]]]:
        """(headers, rows): a row per layer and a total row, as `fewbit.report.size_table` prints them."""
        rows = [
            [r.name, r.kind, r.params, r.bits, f"{r.sparsity:.1%}", r.encoding, r.bytes] for r in self.layers
        ]
        versus = versus_float32(self.ratio, 2).removesuffix(" than float32")
        rows.append(["total", "", self.params, "", "", versus, self.bytes])
        return ["layer", "type", "params", "bits", "sparsity", "encoding", "bytes"], rows


def _packed_row(name: str, layer: PackedLayer, kind: str) -> LayerSize:
    p = layer.packed_weight
    params = p.numel + (0 if layer.bias is None else layer.bias.numel())
    return LayerSize(
        name=name,
        kind=kind,
        params=params,
        bits=p.bits,
        sparsity=round(p.sparsity, 6),
        bytes=layer.nbytes,
        float32_bytes=4 * params,
        encoding=p.encoding,
        mask_format=p.mask_format,
        act_bits=layer.act.bits if layer.act else None,
    )


def size_report(model: nn.Module) -> SizeReport:
    """Stored size of `model` (fake-compressed, converted, or plain float), layer by layer."""
    rows = []
    for name, module in model.named_modules():
        if is_compression_name(name):
            continue
        if isinstance(module, PackedLayer):
            rows.append(_packed_row(name, module, module.kind))
        elif isinstance(module, CompressedMixin):
            kind = "conv2d" if isinstance(module, nn.Conv2d) else "linear"
            rows.append(_packed_row(name, pack_layer(module), kind))
        else:
            own = [p for _, p in module.named_parameters(recurse=False)]
            if not own:
                continue
            params = sum(p.numel() for p in own)
            sparsity = 0.0
            if isinstance(module, CompressedBatchNorm):
                sparsity = 1.0 - float(module.cq_channels.keep.mean())
            rows.append(
                LayerSize(
                    name=name,
                    kind=type(module).__name__.lower(),
                    params=params,
                    bits=32,
                    sparsity=round(sparsity, 6),
                    bytes=4 * params,
                    float32_bytes=4 * params,
                    encoding="float",
                )
            )
    return SizeReport(tuple(rows))
