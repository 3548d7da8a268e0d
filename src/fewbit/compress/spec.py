"""A compression spec: an ordered tuple of frozen method configs, read from a compact string or YAML.

The methods (quantize, cluster, prune) are looked up in `fewbit.compress.registry`, where each
registers its config type, its token (`quant`), a parser for that token's arguments and a
handler that installs it on one layer; `compress_` holds no special case for any method.

Compact string grammar (the CLI's `--spec`), items applied left to right::

    spec  := item ("," item)*
    item  := method (":" arg)* ["@" glob ("|" glob)*]
    quant:w4         4-bit weights, symmetric, per output channel, min-max observer
    quant:w4a8       ... and 8-bit input activations of every compressed layer
    quant:a8         8-bit activations only
    quant:w2:per_tensor   options: per_tensor|per_channel, sym|asym, minmax|percentile|mse, lsq
    cluster:16       16-entry k-means codebook per layer
    prune:0.5        50% unstructured magnitude pruning (one-shot); option `poly` = gradual
    prune:2:4        N:M pruning (2 kept in every 4 consecutive inputs)
    prune:channel:0.5[:l2]  structured: drop 50% of output channels by L1 (or L2) norm
    quant:w4@features.*     restrict an item to layers whose name matches a glob (`|` = or)

YAML form: a list of mappings `{method: quant, bits_weight: 4, ...}` (or a mapping with a
`compress:` list).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fewbit.compress.registry import (
    _METHODS,
    _TOKENS,
    method_of,
)
from fewbit.config import CONFIG_VERSION, brief, from_dict, load_yaml
from fewbit.errors import ConfigError

Spec = tuple[Any, ...]


def parse_spec(text: str) -> Spec:
    """The spec of a compact string such as `"prune:0.5,quant:w4a8"` (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("spec: empty compression spec; e.g. 'quant:w4' or 'prune:0.5,quant:w4a8'")
    items = []
    for raw in text.split(","):
        item = raw.strip()
        body, _, globs = item.partition("@")
        parts = [p.strip() for p in body.split(":")]
        method = _TOKENS.get(parts[0].lower())
        if method is None:
            raise ConfigError(
                f"spec: unknown method {parts[0]!r} in {item!r}; choose one of {', '.join(_TOKENS)}"
            )
        config = method.parse([p.lower() for p in parts[1:]])
        if globs:
            config = dataclasses.replace(
                config, layers=tuple(g.strip() for g in globs.split("|") if g.strip())
            )
        items.append(config)
    return tuple(items)


def spec_from_list(data: Sequence[Any]) -> Spec:
    """The spec of a list of mappings `{method: quant, ...}` (YAML form)."""
    if isinstance(data, dict):
        data = data.get("compress", data.get("spec"))
    if not isinstance(data, (list, tuple)):
        raise ConfigError("spec: expected a list of {method: ..., fields...} mappings")
    items = []
    for i, entry in enumerate(data):
        if isinstance(entry, str):
            items.extend(parse_spec(entry))
            continue
        if not isinstance(entry, dict) or "method" not in entry:
            raise ConfigError(f"spec[{i}]: expected a mapping with a `method` key, got {brief(entry)}")
        fields = dict(entry)
        token = str(fields.pop("method")).lower()
        method = _TOKENS.get(token)
        if method is None:
            raise ConfigError(
                f"spec[{i}].method: unknown method {brief(token)}; choose one of {', '.join(_TOKENS)}"
            )
        items.append(from_dict(method.config_type, fields))
    return tuple(items)


def load_spec(spec: str | Path | Any | Iterable[Any]) -> Spec:
    """A spec from a compact string, a YAML file path, one config, or a sequence of configs/mappings."""
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml"))):
        return spec_from_list(load_yaml(spec))
    if isinstance(spec, str):
        return parse_spec(spec)
    if type(spec) in _METHODS:
        return (spec,)
    if isinstance(spec, (list, tuple)):
        items = []
        for entry in spec:
            items.extend(load_spec(entry) if not isinstance(entry, dict) else spec_from_list([entry]))
        if not items:
            raise ConfigError("spec: empty compression spec")
        for config in items:
            method_of(config)
        return tuple(items)
    raise ConfigError(f"spec: cannot read a compression spec from {type(spec).__name__}")


def spec_to_list(spec: Spec) -> list[dict[str, Any]]:
    """The YAML/JSON form of `spec`: one mapping per item, with `method` and `version`."""
    out = []
    for config in spec:
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
        out.append({"method": method_of(config).token, "version": CONFIG_VERSION, **fields})
    return out
