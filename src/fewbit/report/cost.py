"""What on-device adaptation costs: bytes of parameters updated plus activation memory of one inner step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from fewbit.meta.base import SCOPES
from fewbit.meta.scopes import scope_filter

FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class AdaptationMemory:
    """Bytes an inner step needs on the device for one support batch."""

    scope: str
    param_bytes: int  # parameters updated (float32) and their gradients
    activation_bytes: int  # activations kept for the backward pass (or the forward peak when nothing adapts)

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, int | str]:
        return {"scope": self.scope, "param_bytes": self.param_bytes,
                "activation_bytes": self.activation_bytes, "total_bytes": self.total_bytes}


def _is_weight_layer(module: nn.Module) -> bool:
    """A layer with a matrix or convolution kernel (plain or compressed Linear/Conv)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() >= 2


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() or isinstance(module, nn.modules.batchnorm._BatchNorm)


def adaptation_memory(
    model: nn.Module, scope: str, example_input: torch.Tensor, adapts: Callable[[str], bool] | None = None
) -> AdaptationMemory:
    """Memory of one inner step of `scope` on a support batch shaped like `example_input`.

    What backpropagation must keep, by layer type: a weight gradient needs the layer's input; a
    normalisation layer needs its input; a ReLU needs a 1-bit mask; max-pooling needs its argmax
    (1 byte per output). `head` keeps only the head's input; `none` (prototypes) keeps nothing and
    reports the forward peak (largest input + output of one layer). `bias_norm` needs no layer
    inputs for weight gradients, which is why it is cheap (TinyTL).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    names = {m: n for n, m in model.named_modules()}
    stored = 0
    peak = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal stored, peak
        if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        n_in, n_out = inputs[0].numel(), output.numel()
        peak = max(peak, FLOAT_BYTES * (n_in + n_out))
        name = names.get(module, "")
        is_head = name == "head" or name.startswith("head.")
        if scope == "none":
            return
        if scope == "head":
            if is_head and _is_weight_layer(module):
                stored += FLOAT_BYTES * n_in
            return
        if isinstance(module, (nn.Linear, nn.Conv2d)) and (scope == "all") or _is_norm(module):
            stored += FLOAT_BYTES * n_in
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            stored += (n_out + 7) // 8
        elif isinstance(module, (nn.MaxPool2d,)):
            stored += n_out

    leaves = [m for m in model.modules() if _is_weight_layer(m) or _is_norm(m) or not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    if adapts is None:
        adapts = scope_filter(scope, model)
    param_bytes = 2 * FLOAT_BYTES * sum(p.numel() for n, p in model.named_parameters() if adapts(n))
    return AdaptationMemory(scope, param_bytes, peak if scope == "none" else stored)
