"""`fewbit compress RUN_DIR --spec S` and `fewbit inspect PATH`: stored size, layer by layer.

Both print `size_report`'s table, or with `--json` its dict: `bytes`, `float32_bytes`, `ratio`
(float32 bytes / stored bytes) and a `layers` list (a contract that scripts read).
`inspect` takes a run dir or checkpoint, or a `model.fewbit` artifact (handed to
`fewbit.deploy.inspect_artifact`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torch import nn

from fewbit.cli.common import Output, add_common
from fewbit.compress.layers import is_compression_name
from fewbit.errors import ConfigError, FewbitFormatError

SPEC_HELP = (
    "compression spec, e.g. 'quant:w4', 'quant:w4a8', 'prune:0.5,quant:w4', 'cluster:16', 'prune:2:4', "
    "'prune:channel:0.5@features.*', or a YAML file"
)
MODEL_FILE = "model.safetensors"


def register(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("compress", help="compress a trained model and report its stored size")
    comp.add_argument("run_dir", help="a run directory (or a model .safetensors file)")
    comp.add_argument("--spec", required=True, help=SPEC_HELP)
    add_common(comp)
    comp.set_defaults(handler=run_compress)

    insp = sub.add_parser(
        "inspect", help="per-layer size table of a run, checkpoint or model.fewbit artifact"
    )
    insp.add_argument("path", help="a run directory, a model .safetensors file, or a .fewbit artifact")
    add_common(insp)
    insp.set_defaults(handler=run_inspect)


def load_model(path: str | Path) -> tuple[nn.Module, str | None]:
    """The model saved at `path` and the compression spec it was trained with (or None).

    Uses `fewbit.train.load_run` when available; otherwise reads a safetensors file (or
    `RUN_DIR/model.safetensors`) whose metadata `fewbit.backbone` holds the JSON arguments of
    `fewbit.models.build_backbone` and, optionally, `fewbit.compress` a spec string.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"run: {path} does not exist")
    from fewbit.train import load_run

    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        run = load_run(path)
        return run.model, run.config.compress
    return _load_safetensors(file)


def _load_safetensors(file: Path) -> tuple[nn.Module, str | None]:
    from safetensors import safe_open

    from fewbit.compress import compress_
    from fewbit.models import build_backbone

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    except Exception as exc:  # safetensors raises its own error types
        raise FewbitFormatError(f"{file} is not a readable safetensors file ({exc})") from None
    if "fewbit.backbone" not in meta:
        raise FewbitFormatError(f"{file} has no fewbit.backbone metadata; cannot rebuild its model")
    name, args = _backbone_args(meta["fewbit.backbone"], file)
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


def _backbone_args(text: str, file: Path) -> tuple[str, dict[str, Any]]:
    """(name, keyword arguments) of `fewbit.models.build_backbone` from the metadata's JSON."""
    try:
        args = json.loads(text)
    except ValueError:
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata is not JSON") from None
    if not isinstance(args, dict) or not isinstance(args.get("name"), str):
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata must be a JSON object with a backbone name")
    return args.pop("name"), args


def _check_skeleton(name: str, args: dict[str, Any], tensors: dict[str, Any], file: Path) -> None:
    """Build the described model on the meta device (shapes only, no memory) and check that the file
    holds every one of its tensors at its shape: metadata can then never make us allocate more than
    the file holds."""
    import torch

    from fewbit.models import build_backbone

    try:
        with torch.device("meta"):
            skeleton = build_backbone(name, **args)
    except (TypeError, ValueError, RuntimeError, OverflowError, ConfigError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise FewbitFormatError(f"{file}: its fewbit.backbone metadata does not describe a model ({reason})") from None
    for key, value in skeleton.state_dict().items():
        stored = tensors.get(key)
        if stored is None or tuple(stored.shape) != tuple(value.shape):
            got = "missing" if stored is None else f"stored as {list(stored.shape)}"
            raise FewbitFormatError(
                f"{file}: tensors do not fit the model its fewbit.backbone metadata describes "
                f"({key} of shape {list(value.shape)} is {got})"
            )


def _report(model: nn.Module, header: str, extra: dict[str, Any]) -> Output:
    from fewbit.compress import size_report
    from fewbit.report import size_table

    report = size_report(model)
    data = {**report.to_dict(), **extra}
    text = f"{header}\n{size_table(report)}\n{report.bytes} bytes stored, {report.float32_bytes} in float32"
    return Output(data, text)


def run_compress(args: argparse.Namespace) -> Output:
    from fewbit.compress import compress_, load_spec, spec_to_list

    spec = load_spec(args.spec)
    model, _ = load_model(args.run_dir)
    compress_(model, spec)
    return _report(
        model,
        f"{args.run_dir} compressed with {args.spec}",
        {"source": str(args.run_dir), "spec": spec_to_list(spec)},
    )


def run_inspect(args: argparse.Namespace) -> Output:
    from fewbit.compress import compress_, compressed_layers

    path = Path(args.path)
    if path.suffix == ".fewbit":
        from fewbit.deploy import inspect_artifact
        from fewbit.deploy.inspect import inspection_text

        result = inspect_artifact(path)
        return Output(dict(result), inspection_text(result))
    model, spec = load_model(path)
    if spec and not compressed_layers(model):
        compress_(model, spec)
    return _report(
        model, f"{path}" + (f" (compression {spec})" if spec else ""), {"source": str(path), "spec": spec}
    )
