"""fewbit: meta-learning on compressed models (few shots, few bits).

Importing fewbit has no side effects and imports no heavy module; the entry points are
loaded on first use: `compress`, `compress_`, `meta_train`, `adapt`, `evaluate`, `export`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": ("fewbit.evaluation", "evaluate"),
    "load_source": ("fewbit.data.sources", "load_source"),
    "build_backbone": ("fewbit.models", "build_backbone"),
    "Task": ("fewbit.data.task", "Task"),
    "FewbitError": ("fewbit.errors", "FewbitError"),
    "compress": ("fewbit.compress", "compress"),
    "compress_": ("fewbit.compress", "compress_"),
    "convert": ("fewbit.compress", "convert"),
    "size_report": ("fewbit.compress", "size_report"),
    "meta_train": ("fewbit.train", "meta_train"),
    "adapt": ("fewbit.meta", "adapt"),
    "export": ("fewbit.deploy", "export"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fewbit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", *_LAZY]
