"""`inspect_artifact`: what a `.fewbit` file holds, layer by layer, in bytes (numpy only)."""

from __future__ import annotations

import math
import os
from typing import Any

from fewbit._io import non_finite_path
from fewbit.artifact.format import HEADER_BYTES, decode_artifact, versus_float32
from fewbit.errors import FewbitFormatError
from fewbit.report.tables import table
from fewbit.runtime.model import read_artifact_file

_PARTS = ("data", "codes", "scale", "zero_point", "codebook")


def _tensor_bytes(entry: dict[str, Any]) -> int:
    total = sum(entry[k][1] for k in _PARTS if isinstance(entry.get(k), list))
    mask = entry.get("mask")
    return total + (mask["data"][1] if mask else 0)


def inspect_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact at `path` (verified) as a dict: totals and a per-layer table.

    Keys: `path`, `format_version`, `bytes` (the file), `payload_bytes`, `manifest_bytes`,
    `float32_bytes` (the same tensors as dense float32), `ratio` (float32_bytes / bytes),
    `algorithm`, `architecture`, `input_shape`, `preprocessing`, `adaptation`, and `layers`:
    rows of `name`, `kind`, `params`, `bits`, `sparsity`, `encoding`, `mask_format`,
    `act_bits`, `bytes`, `float32_bytes` (the keys of `fewbit.compress.size_report` rows).
    """
    art = decode_artifact(read_artifact_file(path), where=str(path))
    bad = non_finite_path(art.manifest)
    if bad is not None:
        raise FewbitFormatError(f"{path}: malformed manifest: {bad} is not a finite number")
    try:
        return _inspection(path, art)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise FewbitFormatError(f"{path}: malformed manifest ({type(exc).__name__}: {str(exc)[:100]})") from None


def _row(layer: dict[str, Any], table: dict[str, Any]) -> dict[str, Any] | None:
    """One layer's row: its weight decides bits, sparsity and encoding; a layer with a bias only
    (or a weight only) counts what it has."""
    names = [layer[k] for k in ("weight", "bias") if layer.get(k)]
    if not names:
        return None
    weight = table[names[0]]  # the weight when there is one, else the bias
    params = sum(math.prod(table[n]["shape"]) for n in names)
    quant = weight["enc"] == "quant"
    numel = math.prod(weight["shape"])
    kept = weight["mask"]["kept"] if weight.get("mask") else numel
    act = layer.get("input_quant")
    return {
        "name": str(layer.get("name") or names[0].rsplit(".", 1)[0]),
        "kind": str(layer.get("op")),
        "params": params,
        "bits": weight["bits"] if quant else 32,
        "sparsity": 1.0 - kept / numel if numel else 0.0,
        "encoding": ("codebook" if weight.get("codebook") else "affine") if quant else "float",
        "mask_format": weight["mask"]["format"] if weight.get("mask") else None,
        "act_bits": act["bits"] if isinstance(act, dict) else None,
        "bytes": sum(_tensor_bytes(table[n]) for n in names),
        "float32_bytes": 4 * params,
    }


def _inspection(path: str | os.PathLike[str], art: Any) -> dict[str, Any]:
    manifest = art.manifest
    table = manifest["tensors"]
    rows = [row for layer in manifest["architecture"]["layers"] if (row := _row(layer, table)) is not None]
    payload = manifest["payload"]["length"]
    float32 = sum(4 * math.prod(e["shape"]) for e in table.values())
    return {
        "path": str(path),
        "format_version": manifest["format_version"],
        "bytes": art.nbytes,
        "payload_bytes": payload,
        "manifest_bytes": art.nbytes - payload - HEADER_BYTES,
        "float32_bytes": float32,
        "ratio": float32 / art.nbytes if art.nbytes else 0.0,
        "algorithm": manifest.get("algorithm"),
        "architecture": manifest["architecture"].get("name"),
        "input_shape": manifest["architecture"].get("input_shape"),
        "preprocessing": manifest["preprocessing"],
        "adaptation": manifest.get("adaptation"),
        "layers": rows,
    }


def inspection_text(info: dict[str, Any]) -> str:
    """A per-layer table of `inspect_artifact(...)` for people."""

    rows = []
    for r in info["layers"]:
        act = f"a{r['act_bits']}" if r["act_bits"] else "-"
        sparse = f"{100 * r['sparsity']:.1f}%" + (f" ({r['mask_format']})" if r["mask_format"] else "")
        rows.append(
            [
                r["name"],
                r["kind"],
                r["params"],
                r["bits"],
                act,
                sparse,
                r["encoding"],
                r["bytes"],
                f"{r['float32_bytes'] / max(r['bytes'], 1):.1f}x",
            ]
        )
    rows.append(["manifest", "", "", "", "", "", "json+deflate", info["manifest_bytes"] + 20, ""])
    rows.append(["total", "", "", "", "", "", "", info["bytes"], f"{info['ratio']:.1f}x"])
    head = (
        f"{info['path']}: {info['architecture']} {info['algorithm']}, input {info['input_shape']}, "
        f"format v{info['format_version']}, {info['bytes']} bytes ({versus_float32(info['ratio'])})"
    )
    table_text = table(
        ["layer", "op", "params", "bits", "act", "sparsity", "encoding", "bytes", "vs f32"], rows
    )
    return head + "\n" + table_text
