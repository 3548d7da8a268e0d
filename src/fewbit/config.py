"""Helpers for frozen, keyword-only config dataclasses that round-trip through dicts and YAML."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fewbit._io import read_regular_file
from fewbit.errors import ConfigError

T = TypeVar("T")

CONFIG_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; anything near this is not one
MAX_CONFIG_VALUES = 10_000  # values once YAML aliases are expanded (an alias bomb expands to billions)
MAX_MESSAGE_CHARS = 300  # an error message quotes at most this much of a value


def setting(default: Any = dataclasses.MISSING, help: str | Callable[[], str] = "", *, choices: Any = None,
            flag: bool = True, default_factory: Any = dataclasses.MISSING, metavar: str | None = None,
            parse: Callable[[str], Any] | None = None) -> Any:
    """A config field with what a person reads about it: `help` (and `choices`) become the
    command-line flag's help, so the CLI derives its flags from the configs instead of repeating
    them; `flag=False` keeps a field out of the command line (YAML and API only); `parse` reads the
    flag's text when the field's type alone does not say how (e.g. a number or `auto`)."""
    meta = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "parse": parse}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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
        raise ConfigError(f"{cls.__name__}: config version {brief(version)} is newer than this fewbit understands")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(data) - set(names))
    if unknown:
        shown = ", ".join(brief(k) for k in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise ConfigError(f"{cls.__name__}: unknown field(s) {shown}; known: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {str(exc)[:MAX_MESSAGE_CHARS]}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from `path` with a clear error for a missing or malformed file.

    The file must be a regular UTF-8 file of at most MAX_CONFIG_BYTES whose values, with YAML
    aliases expanded, number at most MAX_CONFIG_VALUES and never contain themselves: a config
    then costs a bounded amount of memory however it is used later (copied, printed, compared).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES, "config file")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests its values too deeply") from None
    _check_expanded_size(data, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _check_expanded_size(root: Any, path: Path) -> None:
    """ConfigError when `root`, with shared (aliased) parts counted each time they appear, exceeds
    MAX_CONFIG_VALUES, or contains itself. Iterative, each distinct container visited once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # containers being counted: the ancestors of the current one
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else node
        if finished:
            open_.discard(key)
            total = 1 + len(node) * isinstance(node, dict) + sum(sizes.get(id(c), 1) for c in children)
            sizes[key] = total
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"config file {path} expands to more than {MAX_CONFIG_VALUES} values "
                    "(YAML aliases repeating data); write the values out"
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise ConfigError(f"config file {path} has a YAML alias that contains itself")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)


def brief(value: Any) -> str:
    """A repr of `value` cut to a bounded length, for error messages (a value may be huge)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 8, 8, 60, 60
    return short.repr(value)


def check(condition: bool, owner: str, field: str, message: str) -> None:
    """Raise ConfigError naming `owner.field` unless `condition` holds."""
    if not condition:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        raise ConfigError(f"{owner}.{field}: {message}")
