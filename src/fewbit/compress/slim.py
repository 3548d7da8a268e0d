"""`slim`: physically remove channel-pruned output channels, giving a smaller dense model.

Works on chains of layers (nested `nn.Sequential`s, and a Backbone's `features` then `head`):
Conv2d, Linear, BatchNorm, activations, pooling, Flatten, Identity, Dropout. A removed output
channel of one layer removes its BatchNorm channel and the matching inputs of the next Conv2d
or Linear (after a Flatten, the channel's whole block of features). Since channel pruning
zeroes a channel's weights, bias, and the scale/shift of the BatchNorm right after, the channel
is exactly zero downstream and removing it changes no output. The model's last layer keeps its
outputs (they are the logits). A channel-pruned layer whose output goes somewhere `slim`
cannot follow (a residual block, a grouped convolution) raises ConfigError naming it.

Other compression of a slimmed layer (quantizer, codebook, unstructured mask) stays, sliced
with it. Observer-derived weight scales of the layers it cuts are frozen at their current
values (they become LSQ steps, `cq_weight.step`), so quantized outputs stay identical too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fewbit.compress.layers import CompressedBatchNorm, CompressedMixin, set_submodule
from fewbit.compress.prune import Mask
from fewbit.compress.quantize import WeightQuant
from fewbit.errors import ConfigError
from fewbit.models.backbone import Backbone
from fewbit.models.layers import BatchNorm, Flatten

_PASS = (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout, nn.Tanh, nn.Sigmoid)


def _chain(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Leaves of nested Sequentials in execution order; other containers are returned whole."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _chain(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix, module)]


def _channel_pruned(module: nn.Module) -> bool:
    mask = getattr(module, "cq_mask", None)
    return isinstance(mask, Mask) and mask.config.pattern == "channel"


def _slice(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(dim, idx.to(t.device)).clone()


@torch.no_grad()
def _cut_inputs(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(_slice(layer.weight, 1, idx))
    mask = getattr(layer, "cq_mask", None)
    if isinstance(mask, Mask):
        mask.mask = _slice(mask.mask, 1, idx)
    if isinstance(layer, nn.Linear):
        layer.in_features = len(idx)
    else:
        layer.in_channels = len(idx)  # type: ignore[assignment]


@torch.no_grad()
def _cut_outputs(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(_slice(layer.weight, 0, idx))
    if layer.bias is not None:
        layer.bias = nn.Parameter(_slice(layer.bias, 0, idx))
    for _, t in getattr(layer, "transforms", list)():
        if isinstance(t, Mask):
            t.mask = _slice(t.mask, 0, idx)
        elif isinstance(t, WeightQuant) and t.learnable and t.step.numel() > 1:
            t.step = nn.Parameter(_slice(t.step, 0, idx))
            t.zero_point = _slice(t.zero_point, 0, idx)
    if isinstance(layer, nn.Linear):
        layer.out_features = len(idx)
    else:
        layer.out_channels = len(idx)  # type: ignore[assignment]


@torch.no_grad()
def _freeze_scales(layer: nn.Module) -> None:
    """Turn observer-derived weight scales into (LSQ) steps at their current values.

    The observer would otherwise see the sliced weight and might pick another scale; frozen
    at the unsliced value, the slimmed layer computes exactly what it did.
    """
    for attr, t in getattr(layer, "transforms", list)():
        if isinstance(t, WeightQuant) and not t.learnable:
            scale, zp = t.observed(layer.compress_weight(layer.weight, upto=attr))  # type: ignore[attr-defined]
            t.learnable = True
            t.step = nn.Parameter(scale.clone())
            t.register_buffer("zero_point", zp.clone())


def _drop_channel_mask(model: nn.Module, name: str, layer: nn.Module) -> None:
    """After slicing, a channel mask keeps everything: remove it (and the wrapper if nothing is left)."""
    assert isinstance(layer, CompressedMixin)
    layer.cq_order.remove("cq_mask")
    del layer.cq_mask
    if not layer.cq_order and getattr(layer, "cq_act", None) is None:
        plain: nn.Module = (
            nn.Linear.__new__(nn.Linear) if isinstance(layer, nn.Linear) else nn.Conv2d.__new__(nn.Conv2d)
        )
        plain.__dict__ = {k: v for k, v in layer.__dict__.items() if k != "cq_order"}
        set_submodule(model, name, plain)


def slim(model: nn.Module) -> nn.Module:
    """A smaller copy of `model` without its channel-pruned output channels (same outputs)."""
    out = copy.deepcopy(model)
    if isinstance(out, Backbone):
        chain = _chain(out.features, "features") + [("__flatten__", Flatten()), ("head", out.head)]
    elif isinstance(out, nn.Sequential):
        chain = _chain(out, "")
    else:
        raise ConfigError(
            f"slim: {type(out).__name__} is not a Sequential or a Backbone; slim cannot follow it"
        )
    keep: torch.Tensor | None = None  # kept channel indices of the current activation (None: all)
    channels = 0  # channels of the current activation before slimming
    last = max((i for i, (_, m) in enumerate(chain) if isinstance(m, (nn.Linear, nn.Conv2d))), default=-1)
    for i, (name, m) in enumerate(chain):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if isinstance(m, nn.Conv2d) and m.groups != 1 and (keep is not None or _channel_pruned(m)):
                raise ConfigError(f"slim: layer {name} is a grouped convolution; slim cannot follow it")
            if keep is not None or (_channel_pruned(m) and i != last):
                _freeze_scales(m)
            if keep is not None:
                if isinstance(m, nn.Linear) and m.in_features != channels:
                    per = m.in_features // channels  # features per channel after a Flatten
                    keep = (keep[:, None] * per + torch.arange(per)).reshape(-1)
                _cut_inputs(m, keep)
            channels = m.weight.shape[0]
            keep = None
            if _channel_pruned(m) and i != last:
                kept = m.cq_mask.channel_keep().nonzero().reshape(-1).cpu()
                if len(kept) < channels:
                    _cut_outputs(m, kept)
                    keep = kept
                _drop_channel_mask(out, name, m)
        elif isinstance(m, (BatchNorm, CompressedBatchNorm)):
            if keep is not None:
                bn = BatchNorm(len(keep), m.eps)
                with torch.no_grad():
                    bn.weight.copy_(_slice(m.weight, 0, keep))
                    bn.bias.copy_(_slice(m.bias, 0, keep))
                set_submodule(out, name, bn)
            elif isinstance(m, CompressedBatchNorm):
                continue
        elif isinstance(m, (Flatten, nn.Flatten, *_PASS)):
            continue
        else:
            pruned_inside = [n for n, sub in m.named_modules() if _channel_pruned(sub)]
            if keep is not None or pruned_inside:
                culprit = f"{name}.{pruned_inside[0]}" if pruned_inside and pruned_inside[0] else name
                raise ConfigError(
                    f"slim: layer {culprit} is channel-pruned but feeds {type(m).__name__} {name}, which "
                    "slim cannot follow (e.g. a residual add); prune it unstructured or exclude it from "
                    "channel pruning"
                )
            keep = None
    return out
