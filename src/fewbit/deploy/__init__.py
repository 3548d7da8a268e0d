"""Deployment: the `.fewbit` artifact (format, bit packing), export from PyTorch, ONNX export.

    fewbit.deploy.export(model, "model.fewbit", algorithm="protonet")
    fewbit.deploy.inspect_artifact("model.fewbit")   # per-layer bytes and ratio to float32

Reading an artifact (`format`, `packing`, `inspect`) needs numpy only, so the torch-free runtime
uses these modules; `export` and `export_onnx` import torch and are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": ("fewbit.deploy.torch_export", "export"),
    "export_onnx": ("fewbit.deploy.onnx_export", "export_onnx"),
    "artifact_from_model": ("fewbit.deploy.torch_export", "artifact_from_model"),
    "inspect_artifact": ("fewbit.deploy.inspect", "inspect_artifact"),
    "read_artifact": ("fewbit.deploy.format", "read_artifact"),
    "write_artifact": ("fewbit.deploy.format", "write_artifact"),
    "QuantTensor": ("fewbit.deploy.format", "QuantTensor"),
    "pack_bits": ("fewbit.deploy.packing", "pack_bits"),
    "unpack_bits": ("fewbit.deploy.packing", "unpack_bits"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fewbit.deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
