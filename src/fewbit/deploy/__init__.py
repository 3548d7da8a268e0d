"""Deployment: export from PyTorch to the `.fewbit` artifact or ONNX, and inspection.

    fewbit.deploy.export(model, "model.fewbit", algorithm="protonet")
    fewbit.deploy.inspect_artifact("model.fewbit")   # per-layer bytes and ratio to float32
    fewbit.deploy.export_c("model.fewbit", "model_c")  # a C99 library that adapts on the device

The file format and bit packing live in the torch-free `fewbit.artifact`; `export` and
`export_onnx` import torch and are loaded on first use; `export_c` needs numpy only.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": ("fewbit.deploy.torch_export", "export"),
    "export_onnx": ("fewbit.deploy.torch_export", "export_onnx"),
    "export_c": ("fewbit.deploy.c_export", "export_c"),
    "artifact_from_model": ("fewbit.deploy.torch_export", "artifact_from_model"),
    "inspect_artifact": ("fewbit.deploy.inspect", "inspect_artifact"),
    "read_artifact": ("fewbit.artifact.format", "read_artifact"),
    "write_artifact": ("fewbit.artifact.format", "write_artifact"),
    "PackedTensor": ("fewbit.artifact.tensor", "PackedTensor"),
    "pack_bits": ("fewbit.artifact.packing", "pack_bits"),
    "unpack_bits": ("fewbit.artifact.packing", "unpack_bits"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fewbit.deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
