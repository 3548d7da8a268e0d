"""`convert`: fake-compressed layers to packed containers, the form that export stores.

Each compressed weight becomes a `fewbit.artifact.PackedTensor` (the torch-free type the artifact
writes and the runtime reads): bit-packed codes of the kept elements, the scales and zero points
(affine grid) or a codebook, and the keep-mask. Its `nbytes` is exactly the length of its
`payload()`, which is what `size_report` counts. Dequantizing gives bit for bit the weight the
fake-compressed layer used, so a converted model computes what the trained one did.

The functions here are the torch side of packing: they quantize a torch weight with the layer's
own grid (`pack_affine`, `pack_codebook`, `pack_dense`, `pack_float`) and hand the integer codes
to `PackedTensor.from_codes`, which packs them once.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.artifact.tensor import PackedTensor
from fewbit.compress.cluster import Codebook
from fewbit.compress.layers import CompressedBatchNorm, CompressedMixin, set_submodule
from fewbit.compress.quantize import ActQuant, WeightQuant, dequantize, quantize_codes, scale_zero_point, weight_qparams
from fewbit.models.layers import BatchNorm


def _keep(mask: torch.Tensor | None, w: torch.Tensor) -> Any:
    return None if mask is None else (mask.detach().cpu().reshape(w.shape) > 0).numpy()


def pack_affine(
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
    return PackedTensor.from_codes(
        q.round().to(torch.int64).numpy(),
        bits,
        scale=s.reshape(-1).numpy(),
        zero_point=None if symmetric else z.reshape(-1).round().to(torch.int64).numpy(),
        axis=0 if s.numel() > 1 else None,
        mask=_keep(mask, w),
        symmetric=symmetric,
    )


def pack_float(
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
    return pack_affine(weight, bits, scale, zp, symmetric=symmetric, mask=mask)


def pack_codebook(
    weight: torch.Tensor, codebook: torch.Tensor, bits: int, mask: torch.Tensor | None = None
) -> PackedTensor:
    """Pack `weight` as indices of its nearest `codebook` entries (`bits` bits each)."""
    w = weight.detach().float().cpu()
    book = codebook.detach().float().cpu()
    idx = (w.unsqueeze(-1) - book).abs().argmin(-1)
    return PackedTensor.from_codes(idx.numpy(), bits, codebook=book.numpy(), mask=_keep(mask, w))


def pack_dense(weight: torch.Tensor, mask: torch.Tensor | None = None) -> PackedTensor:
    """Store `weight` as float32 values of its kept elements."""
    w = weight.detach().float().cpu()
    return PackedTensor.from_values(w.numpy(), mask=_keep(mask, w))


def to_torch(packed: PackedTensor) -> torch.Tensor:
    """The dense float32 torch tensor a packed tensor stands for (zeros where pruned)."""
    return torch.from_numpy(packed.dequantize())


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
        w = to_torch(self.packed_weight).to(x.device)
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
            packed = pack_affine(seen, transform.bits, scale, zp, symmetric=transform.symmetric, mask=mask)
        else:
            packed = pack_codebook(seen, transform.centroids, transform.bits, mask=mask)
    else:
        packed = pack_dense(layer.compress_weight(weight), mask=mask)
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
    "pack_affine",
    "pack_codebook",
    "pack_dense",
    "pack_float",
    "pack_layer",
    "packed_layers",
    "to_torch",
]
