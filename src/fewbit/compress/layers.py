"""Compressed layers: Conv2d / Linear / BatchNorm subclasses that compress whatever weight they see.

A compressed layer keeps its parameters `weight` and `bias` under their usual names and holds
its weight transforms as child modules named `cq_*` (`cq_mask`, `cq_weight`, `cq_codebook`),
applied in `cq_order`, the order of the spec. Input activations are fake-quantized by
`cq_act` when the spec asks for it. Because the transforms run inside `forward` on
`self.weight`, `torch.func.functional_call` with fast weights gets compressed fast weights.

Whatever the position of a pruning mask in the spec, the final weight is multiplied by it
once more, so pruned weights are exactly zero even after a 1-bit quantizer (whose grid has no
zero). The position still matters: a transform sees the output of the ones before it (a
quantizer after pruning calibrates on the sparse weight; a pruning after quantization ranks
the quantized magnitudes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewbit.models.layers import BatchNorm

CQ_PREFIX = "cq_"


def is_compression_name(name: str) -> bool:
    """True for a parameter or buffer owned by compression (a dotted name with a `cq_` component)."""
    return any(part.startswith(CQ_PREFIX) for part in name.split("."))


class WeightTransform(nn.Module):
    """A differentiable map of a weight tensor onto its compressed value (STE where needed).

    `kind` tells the accounting what the transform stores: "values" (a quantizer or a
    codebook: it decides the stored codes) or "mask" (a pruning mask).
    """

    kind = "values"

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_tasks(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights [tasks, ...]`, each task's weight transformed as `forward` would alone."""
        return torch.func.vmap(self)(weights)


class CompressedMixin:
    """Shared by the compressed layers: the ordered weight transforms and the activation quantizer."""

    cq_order: list[str]

    def init_compression(self) -> None:
        """Start with no transforms (called once when a plain layer is swapped in)."""
        self.cq_order = []

    def add_transform(self, attr: str, transform: nn.Module) -> None:
        """Append `transform` as child `attr` (must start with `cq_`) at the end of the order."""
        if not attr.startswith(CQ_PREFIX):
            raise ValueError(f"compression modules must be named {CQ_PREFIX}*, got {attr!r}")
        nn.Module.__setattr__(self, attr, transform)  # type: ignore[arg-type]
        if attr != "cq_act":
            self.cq_order.append(attr)

    def transforms(self) -> list[tuple[str, nn.Module]]:
        """The weight transforms in the order they apply."""
        return [(a, getattr(self, a)) for a in self.cq_order]

    def compress_weight(self, weight: torch.Tensor, upto: str | None = None) -> torch.Tensor:
        """`weight` through the transforms (those before `upto` only, when given), masks re-applied."""
        w = weight
        for attr, t in self.transforms():
            if attr == upto:
                return w
            w = t(w)
        mask = getattr(self, "cq_mask", None)
        return w if mask is None else mask(w)

    def compress_weight_tasks(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights [tasks, ...]` (one weight per task) each through the transforms, in one pass."""
        w = weights
        for _, t in self.transforms():
            w = t.forward_tasks(w)
        mask = getattr(self, "cq_mask", None)
        return w if mask is None else mask.forward_tasks(w)

    def compress_bias(self, bias: torch.Tensor | None) -> torch.Tensor | None:
        """`bias`, zeroed at pruned output channels (channel pruning only)."""
        mask = getattr(self, "cq_mask", None)
        if bias is None or mask is None:
            return bias
        return mask.apply_bias(bias)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input activations, fake-quantized when the layer has `cq_act`."""
        act = getattr(self, "cq_act", None)
        return x if act is None else act(x)


class CompressedLinear(CompressedMixin, nn.Linear):
    """`nn.Linear` whose weight is compressed in `forward`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(
            self.quantize_input(x), self.compress_weight(self.weight), self.compress_bias(self.bias)
        )


class CompressedConv2d(CompressedMixin, nn.Conv2d):
    """`nn.Conv2d` whose weight is compressed in `forward`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(
            self.quantize_input(x), self.compress_weight(self.weight), self.compress_bias(self.bias)
        )


class CompressedBatchNorm(BatchNorm):
    """The BatchNorm after a channel-pruned layer: scale and shift are zero at pruned channels.

    With them zeroed a pruned channel stays exactly zero through the normalisation, which is
    what lets `slim` remove the channel with identical outputs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        weight, bias = self.compress_params(self.weight, self.bias)
        return (x - mean) * torch.rsqrt(var + self.eps) * weight.view(shape) + bias.view(shape)

    def compress_params(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(weight, bias)` masked at the pruned channels."""
        keep = self.cq_channels.keep
        return weight * keep, bias * keep


class ChannelKeep(nn.Module):
    """A `[channels]` 0/1 buffer `keep`; used by CompressedBatchNorm."""

    def __init__(self, keep: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", keep.detach().clone().float())


def swap_in(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Wrap the plain layer `name` of `model` in its compressed class (no-op if already); returns it."""
    if isinstance(module, (CompressedMixin, CompressedBatchNorm)):
        return module
    if type(module) is nn.Linear:
        new: nn.Module = CompressedLinear.__new__(CompressedLinear)
    elif type(module) is nn.Conv2d:
        new = CompressedConv2d.__new__(CompressedConv2d)
    elif type(module) is BatchNorm:
        new = CompressedBatchNorm.__new__(CompressedBatchNorm)
    else:
        raise TypeError(f"cannot compress {type(module).__name__}")
    new.__dict__ = module.__dict__.copy()
    for key in ("_parameters", "_buffers", "_modules"):
        new.__dict__[key] = dict(module.__dict__[key])
    if isinstance(new, CompressedMixin):
        new.init_compression()
    set_submodule(model, name, new)
    return new


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace submodule `name` (dotted) of `model` by `module`."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def compressible(module: nn.Module) -> bool:
    """True for the layer types compression handles (Linear, Conv2d, already compressed ones)."""
    return type(module) in (nn.Linear, nn.Conv2d) or isinstance(module, CompressedMixin)


def compressed_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """`(name, layer)` of every compressed Linear/Conv2d of `model`, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CompressedMixin)]
