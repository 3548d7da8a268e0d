"""The registry of data sources: a leaf module.

Each kind of data (`folder`, `csvsplit`, `csv`, `omniglot`, `omniglot-minimal`, `glyphs`,
`sinusoid`, `series`, `signals`) registers its spec token, its frozen options dataclass
(validated on construction) and its loader with `@register_source`; the loader modules import
this module and it imports none of them (the `fewbit.data` package imports them all, so every
kind is registered once the package is imported). A spec string is parsed once, by
`parse_spec`; `load_source` looks its kind up here and knows no kind by name. A new kind of
data is one module that registers itself, plus its import in `fewbit/data/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fewbit.config import brief
from fewbit.errors import DataError

Loader = Callable[..., Any]  # (path argument, options, *, progress) -> a Source


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """A registered kind of data source.

    `token`: the spec's kind (`folder` in `folder:PATH`); `options`: the frozen dataclass of its
    reading options; `load(arg, options, progress=...)`: the loader; `kind`: what it holds
    (images, table, series, regression); `path`: whether the spec takes a path (True: required,
    False: none, None: optional); `backbone`: the backbone `auto` means for it; `usage` and
    `help`: what a person reads; `train_defaults`: TrainConfig settings that differ for this kind
    when not given (a user's own photos train with augmentation and until validation stops rising).
    """

    token: str
    options: type
    load: Loader
    kind: str
    path: bool | None
    backbone: str
    usage: str
    help: str
    train_defaults: tuple[tuple[str, Any], ...] = ()


SOURCES: dict[str, SourceKind] = {}


def register_source(token: str, *, options: type, kind: str, path: bool | None, backbone: str,
                    help: str, train_defaults: dict[str, Any] | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering `load` as the loader of the spec kind `token`."""

    def wrap(load: Loader) -> Loader:
        usage = {True: f"{token}:PATH", False: token, None: f"{token}[:PATH]"}[path]
        SOURCES[token] = SourceKind(token, options, load, kind, path, backbone, usage, help,
                                    tuple(sorted((train_defaults or {}).items())))
        return load

    return wrap


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: the registered kind and its path argument ('' when none)."""

    source: SourceKind
    arg: str

    @property
    def token(self) -> str:
        return self.source.token

    @property
    def kind(self) -> str:
        """images, table, series or regression."""
        return self.source.kind


def parse_spec(spec: Any) -> DataSpec:
    """`kind[:PATH]` checked against the registry; DataError naming the choices otherwise."""
    if not isinstance(spec, str) or not spec:
        raise DataError(f"empty data spec; use one of: {spec_help()}")
    token, colon, arg = spec.partition(":")
    source = SOURCES.get(token)
    if source is None:
        raise DataError(f"unknown data source {brief(token)}; use one of: {spec_help()}")
    if source.path is True and not arg:
        raise DataError(f"{token} needs a path: {source.usage} ({source.help})")
    if source.path is False and colon:
        raise DataError(f"{token} takes no argument, got {brief(spec)}")
    return DataSpec(source, arg)


def spec_kind(spec: Any) -> str | None:
    """What the spec's source holds (images, table, series, regression) without reading it; None
    for a spec that names no registered kind."""
    token = spec.partition(":")[0] if isinstance(spec, str) else ""
    source = SOURCES.get(token)
    return source.kind if source is not None else None


def options_type(spec: Any) -> type:
    """The options dataclass of the spec's kind (DataError for an unknown kind)."""
    return parse_spec(spec).source.options


def spec_help() -> str:
    """`glyphs | sinusoid | folder:PATH | ...`: every registered kind, as a person writes it."""
    return " | ".join(s.usage for s in SOURCES.values())


def option_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every reading option of every registered kind, by name (the first registration's field)."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for source in SOURCES.values():
        for f in dataclasses.fields(source.options):
            out.setdefault(f.name, f)
    return out


def option_defaults() -> dict[str, tuple[Any, list[str]]]:
    """Every reading option: its default, and the kinds that have it."""
    out: dict[str, tuple[Any, list[str]]] = {}
    for source in SOURCES.values():
        for f in dataclasses.fields(source.options):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.setdefault(f.name, (default, []))[1].append(source.token)
    return out
