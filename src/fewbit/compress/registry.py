"""The registry of compression methods, keyed by config type: a leaf module.

Each method (quantize, cluster, prune) registers three things: the token of the compact string
(`quant`), a parser for that token's arguments, and a handler that installs the method on one
layer. The method modules import this module; it imports none of them (the `fewbit.compress`
package imports them, so every method is registered once the package is imported). Also the
small validators the method configs share.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from fewbit.config import brief
from fewbit.errors import ConfigError

Handler = Callable[[nn.Module, Any, str, nn.Module], None]  # (layer, config, layer name, model)
TokenParser = Callable[[list[str]], Any]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered compression method."""

    token: str
    config_type: type
    handler: Handler
    parse: TokenParser


_METHODS: dict[type, Method] = {}
_TOKENS: dict[str, Method] = {}


def register_method(token: str, config_type: type, parse: TokenParser) -> Callable[[Handler], Handler]:
    """Decorator registering `handler` as the installer of `config_type` (compact token `token`)."""

    def wrap(handler: Handler) -> Handler:
        method = Method(token, config_type, handler, parse)
        _METHODS[config_type] = method
        _TOKENS[token] = method
        return handler

    return wrap


def method_of(config: Any) -> Method:
    """The registered method of `config`; ConfigError for anything else."""
    method = _METHODS.get(type(config))
    if method is None:
        known = ", ".join(sorted(c.__name__ for c in _METHODS))
        raise ConfigError(f"spec: {type(config).__name__} is not a compression config; known: {known}")
    return method


def matches_layers(config: Any, name: str) -> bool:
    """True when layer `name` matches the config's `layers` globs (no globs: every layer)."""
    patterns = config.layers
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)



def check_bits(owner: str, field: str, value: Any, allow_none: bool = False) -> None:
    """ConfigError naming `owner.field` unless `value` is an int in 1..8 (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise ConfigError(f"{owner}.{field}: must be an integer in 1..8, got {brief(value)}")


def check_choice(owner: str, field: str, value: Any, choices: Sequence[str]) -> None:
    """ConfigError naming `owner.field` unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{owner}.{field}: must be one of {', '.join(choices)}, got {brief(value)}")


def check_layers(owner: str, value: Any) -> None:
    """ConfigError unless `value` is a tuple of glob strings."""
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{owner}.layers: must be a tuple of layer-name globs, got {brief(value)}")
