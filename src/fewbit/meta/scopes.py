"""Adaptation scopes: which parameters the inner loop adapts.

`all`: every parameter whose last name part is `weight` or `bias`; `head`: `head.*`;
`bias_norm`: biases and BatchNorm scale/shift (TinyTL-style); `none`: nothing.
Parameters owned by compression live under a name component starting with `cq_`
(e.g. `features.0.0.cq_weight.step`); they are outer-learned only, so no scope adapts them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fewbit.compress.layers import is_compression_name
from fewbit.errors import ConfigError
from fewbit.meta.base import SCOPES
from fewbit.models.layers import BatchNorm

NameFilter = Callable[[str], bool]


def is_compression_param(name: str) -> bool:
    """True for parameters owned by compression (a name component starting with `cq_`)."""
    return is_compression_name(name)


def _all(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("weight", "bias")


def _head(name: str) -> bool:
    return name.startswith("head.")


def scope_filter(scope: str, model: nn.Module | None = None) -> NameFilter:
    """The name filter of `scope`; `bias_norm` needs `model` to tell BatchNorm weights apart.

    Without a model, `bias_norm` recognises norm weights by the module name (`bn`, `norm`) or by
    sitting at a position holding a BatchNorm in the standard backbones.
    """
    if scope not in SCOPES:
        raise ConfigError(f"MetaConfig.scope: unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if scope == "all":
        base: NameFilter = _all
    elif scope == "head":
        base = _head
    elif scope == "none":
        return lambda name: False
    else:
        norm_prefixes = _norm_modules(model) if model is not None else None

        def base(name: str) -> bool:
            owner, _, last = name.rpartition(".")
            if last == "bias":
                return True
            if last != "weight":
                return False
            if norm_prefixes is not None:
                return owner in norm_prefixes
            return any(k in owner.rsplit(".", 1)[-1].lower() for k in ("bn", "norm"))

    return lambda name: base(name) and not is_compression_param(name)


def _norm_modules(model: nn.Module) -> set[str]:
    norms = (BatchNorm, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return {name for name, module in model.named_modules() if isinstance(module, norms)}
