"""The algorithm registry: an open mapping from a name to its Algorithm class.

A leaf module: algorithms import it to register themselves; it imports none of them. The
`fewbit.meta` package imports the built-in algorithms, so every name is registered once
`fewbit.meta` (or any module in it) has been imported. A new algorithm is a class decorated
with `@register_algorithm("name", config=ItsConfig)` in a module that is imported before it is
built; `ItsConfig` is a frozen subclass of `fewbit.meta.MetaConfig` holding the algorithm's own
settings (none given: the shared `MetaConfig` alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

ALGORITHMS: dict[str, Any] = {}  # name -> Algorithm subclass

C = TypeVar("C")


def register_algorithm(name: str, *, config: type | None = None) -> Callable[[C], C]:
    """Class decorator: make `name` buildable by `fewbit.meta.build_algorithm` and valid in MetaConfig,
    with `config` (a MetaConfig subclass; None: MetaConfig itself) as the type of its settings."""

    def wrap(cls: C) -> C:
        if not isinstance(name, str) or not name:
            raise ValueError(f"register_algorithm: a name is a non-empty string, got {name!r}")
        cls.name = name  # type: ignore[attr-defined]
        cls.config_type = config  # type: ignore[attr-defined]
        ALGORITHMS[name] = cls
        return cls

    return wrap


def algorithm_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(ALGORITHMS)
