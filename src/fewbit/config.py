"""Helpers for frozen, keyword-only config dataclasses that round-trip through dicts and YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fewbit.errors import ConfigError

T = TypeVar("T")

CONFIG_VERSION = 1


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass, with its `version`."""
    out: dict[str, Any] = {"version": CONFIG_VERSION}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from a dict; unknown keys and a newer `version` raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    version = data.pop("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(f"{cls.__name__}: config version {version!r} is newer than this fewbit understands")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from `path` with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def check(condition: bool, owner: str, field: str, message: str) -> None:
    """Raise ConfigError naming `owner.field` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{owner}.{field}: {message}")
