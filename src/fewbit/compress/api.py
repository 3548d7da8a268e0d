"""The entry points: `compress_` / `compress` (prepare), `calibrate`, `project_params`."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from fewbit.compress.layers import CompressedBatchNorm, CompressedMixin, compressible, is_compression_name, swap_in
from fewbit.compress.quantize import ActQuant
from fewbit.compress.registry import matches_layers, method_of
from fewbit.compress.spec import load_spec
from fewbit.errors import ConfigError

FilterFn = Callable[[nn.Module, str], bool]


def compress_(model: nn.Module, spec: Any, filter_fn: FilterFn | None = None) -> nn.Module:
    """Compress `model` in place with `spec`; returns `model`.

    `spec` is a compact string (`"prune:0.5,quant:w4a8"`), a YAML path, one config, or a
    sequence of configs, applied in order. Each item goes to every Linear/Conv2d layer for which
    `filter_fn(module, name)` holds (default: all) and that matches the item's `layers` globs;
    an item that reaches no layer raises ConfigError. Matched layers are swapped for their
    compressed subclasses in place, keeping their `weight`/`bias` parameters (same objects,
    same names); what compression adds lives in `cq_*` children.
    """
    items = load_spec(spec)
    candidates = [(n, m) for n, m in model.named_modules() if n and compressible(m)]
    for i, config in enumerate(items):
        method = method_of(config)
        chosen = [
            (n, m)
            for n, m in candidates
            if (filter_fn is None or filter_fn(m, n)) and matches_layers(config, n)
        ]
        if not chosen:
            what = f" with layers={list(config.layers)}" if getattr(config, "layers", ()) else ""
            raise ConfigError(
                f"spec[{i}] ({method.token}{what}): the filter matches no Linear/Conv2d layer of the model"
            )
        for name, _ in chosen:
            layer = swap_in(model, name, model.get_submodule(name))
            method.handler(layer, config, name, model)
        candidates = [(n, model.get_submodule(n)) for n, _ in candidates]
    return model


def compress(model: nn.Module, spec: Any, filter_fn: FilterFn | None = None) -> nn.Module:
    """A compressed deep copy of `model` (see `compress_`); `model` is left untouched."""
    return compress_(copy.deepcopy(model), spec, filter_fn)


def project_params(model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`params` with every compressed layer's `weight`/`bias` mapped onto its compressed value.

    Quantized weights land on their grid, pruned ones on zero, clustered ones on the codebook;
    differentiable (straight-through), so it can follow each inner-loop step. Params carrying a
    leading tasks dimension (one more than the layer's) are projected task by task. Names not
    belonging to a compressed layer pass through unchanged.
    """
    out = dict(params)
    for name, module in model.named_modules():
        if isinstance(module, CompressedMixin):
            fn_w: Callable[[torch.Tensor], Any] = module.compress_weight
            fn_b: Callable[[Any], Any] = module.compress_bias
        elif isinstance(module, CompressedBatchNorm):
            keep = module.cq_channels.keep
            fn_w = fn_b = keep.mul  # type: ignore[assignment]
        else:
            continue
        for leaf, fn in (("weight", fn_w), ("bias", fn_b)):
            key = f"{name}.{leaf}"
            own = getattr(module, leaf, None)
            if key not in params or own is None:
                continue
            value = params[key]
            out[key] = torch.func.vmap(fn)(value) if value.dim() == own.dim() + 1 else fn(value)
    return out


def compressed_names(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers owned by compression (a `cq_` name component)."""
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return [n for n in names if is_compression_name(n)]


@contextlib.contextmanager
def observing(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, activation quantizers record what they see; on exit they set static scales."""
    acts = [m for m in model.modules() if isinstance(m, ActQuant)]
    for a in acts:
        a.start_observing()
    try:
        yield model
    finally:
        for a in acts:
            a.finish_observing()


@torch.no_grad()
def calibrate(
    model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any] | None = None
) -> nn.Module:
    """Post-training calibration of activation scales on a few batches; returns `model`.

    Each batch is passed as `model(batch)` (or `forward(model, batch)`); `(x, y)` pairs use `x`.
    Weight scales need no calibration: they follow the weights (or are LSQ parameters).
    """
    was_training = model.training
    model.eval()
    with observing(model):
        for batch in batches:
            if forward is not None:
                forward(model, batch)
            else:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    model.train(was_training)
    return model
