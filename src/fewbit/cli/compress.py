"""`fewbit compress RUN_DIR --spec S` and `fewbit inspect PATH`: stored size, layer by layer.

Both print `size_report`'s table, or with `--json` its dict: `bytes`, `float32_bytes`, `ratio`
(float32 bytes / stored bytes) and a `layers` list (a contract that scripts read).
`inspect` takes a run dir or checkpoint, or a `model.fewbit` artifact (handed to
`fewbit.deploy.inspect_artifact`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from fewbit.cli.common import Output, add_common
from fewbit.compress import compress_, compressed_layers, load_spec, size_report, spec_to_list
from fewbit.deploy import inspect_artifact
from fewbit.deploy.inspect import inspection_text
from fewbit.report import size_table
from fewbit.train.model_file import load_model

SPEC_HELP = (
    "compression spec, e.g. 'quant:w4', 'quant:w4a8', 'prune:0.5,quant:w4', 'cluster:16', 'prune:2:4', "
    "'prune:channel:0.5@features.*', or a YAML file"
)


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


def _report(model: nn.Module, header: str, extra: dict[str, Any]) -> Output:

    report = size_report(model)
    data = {**report.to_dict(), **extra}
    text = f"{header}\n{size_table(report)}\n{report.bytes} bytes stored, {report.float32_bytes} in float32"
    return Output(data, text)


def run_compress(args: argparse.Namespace) -> Output:

    spec = load_spec(args.spec)
    model, _ = load_model(args.run_dir)
    compress_(model, spec)
    return _report(
        model,
        f"{args.run_dir} compressed with {args.spec}",
        {"source": str(args.run_dir), "spec": spec_to_list(spec)},
    )


def run_inspect(args: argparse.Namespace) -> Output:

    path = Path(args.path)
    if path.suffix == ".fewbit":

        result = inspect_artifact(path)
        return Output(dict(result), inspection_text(result))
    model, spec = load_model(path)
    if spec and not compressed_layers(model):
        compress_(model, spec)
    return _report(
        model, f"{path}" + (f" (compression {spec})" if spec else ""), {"source": str(path), "spec": spec}
    )
