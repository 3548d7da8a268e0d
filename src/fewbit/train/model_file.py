"""A model saved as one safetensors file whose metadata names its backbone (`fewbit.backbone`:
the JSON arguments of `fewbit.models.build_backbone`; optionally `fewbit.compress`, a spec), or a
run directory: `load_model` gives either back, checked on the meta device before any tensor of
the model is allocated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from fewbit.compress import compress_
from fewbit.compress.layers import is_compression_name
from fewbit.errors import ConfigError, FewbitFormatError
from fewbit.models import build_backbone
from fewbit.train.run import load_run, meta_skeleton

MODEL_FILE = "model.safetensors"  # a run directory may hold its model as this one file


def load_model(path: str | Path) -> tuple[nn.Module, str | None]:
    """The model saved at `path` and the compression spec it was trained with (or None).

    A run directory is read with `load_run`; otherwise a safetensors file (or
    `RUN_DIR/model.safetensors`) whose metadata `fewbit.backbone` holds the JSON arguments of
    `fewbit.models.build_backbone` and, optionally, `fewbit.compress` a spec string.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run: {path} does not exist")
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        run = load_run(path)
        return run.model, run.config.compress
    return _load_safetensors(file)


def _load_safetensors(file: Path) -> tuple[nn.Module, str | None]:
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    except Exception as exc:  # safetensors raises its own error types
        raise FewbitFormatError(f"{file} is not a readable safetensors file ({exc})") from None
    if "fewbit.backbone" not in meta:
        raise FewbitFormatError(f"{file} has no fewbit.backbone metadata; cannot rebuild its model")
    name, args = _metadata_backbone(meta["fewbit.backbone"], file)
    _check_skeleton(name, args, tensors, file)
    model = build_backbone(name, **args)
    spec = meta.get("fewbit.compress") or None
    try:
        if spec and any(is_compression_name(key) for key in tensors):
            compress_(model, spec)  # the file holds compressed state: rebuild the compressed layers first
            spec = None
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except ConfigError as exc:
        raise FewbitFormatError(f"{file}: its fewbit.compress metadata is not a usable spec ({exc})") from None
    except RuntimeError as exc:  # shapes that do not fit
        raise FewbitFormatError(f"{file}: tensors do not fit the model ({str(exc).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise FewbitFormatError(
            f"{file}: tensors do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model, spec


def _metadata_backbone(text: str, file: Path) -> tuple[str, dict[str, Any]]:
    """(name, keyword arguments) of `fewbit.models.build_backbone` from the metadata's JSON."""
    try:
        args = json.loads(text)
    except ValueError:
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata is not JSON") from None
    if not isinstance(args, dict) or not isinstance(args.get("name"), str):
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata must be a JSON object with a backbone name")
    return args.pop("name"), args


def _check_skeleton(name: str, args: dict[str, Any], tensors: dict[str, Any], file: Path) -> None:
    """Build the described model on the meta device (`run.skeleton`: shapes only, no memory) and
    check that the file holds every one of its tensors at its shape: metadata can then never make
    us allocate more than the file holds."""
    try:
        skeleton = meta_skeleton(name, args)
    except (TypeError, ValueError, OverflowError, ConfigError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata does not describe a model ({reason})") from None
    if skeleton is None:
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata does not describe a model (its layers do "
                                "not fit its input)")
    for key, value in skeleton.state_dict().items():
        stored = tensors.get(key)
        if stored is None or tuple(stored.shape) != tuple(value.shape):
            got = "missing" if stored is None else f"stored as {list(stored.shape)}"
            raise FewbitFormatError(
                f"{file}: tensors do not fit the model its fewbit.backbone metadata describes "
                f"({key} of shape {list(value.shape)} is {got})"
            )
