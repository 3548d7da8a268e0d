"""Export a (possibly compressed) PyTorch backbone to a `.fewbit` artifact.

The artifact stores exactly what the compressed model computes: for each compressed layer the
`fewbit.artifact.PackedTensor` that `fewbit.compress.convert` makes (`pack_layer`: codes, scales,
zero points, mask, codebook, and the input-activation quantizer), written as it is. A model that
is already converted exports the same way. Before writing, every stored weight of a compressed
layer is dequantized and compared bit for bit with the weight the layer computes with, so an
artifact never silently disagrees with its model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fewbit import __version__
from fewbit.artifact.format import Tensor, write_artifact
from fewbit.compress.convert import PackedLayer, pack_layer
from fewbit.compress.layers import CompressedMixin, is_compression_name
from fewbit.deploy.onnx_export import write_onnx
from fewbit.errors import ConfigError
from fewbit.meta import Algorithm, MetaConfig, build_algorithm
from fewbit.models.layers import BatchNorm, Flatten
from fewbit.models.resnet12 import ResidualStage
from fewbit.runtime.ops import pair_spec
from fewbit.runtime.preprocess import preprocessing_from_dict

DEFAULT_PREPROCESSING: dict[str, Any] = {  # ink data (Omniglot, glyphs); a run records its own
    "kind": "image",
    "image_size": 28,
    "channels": 1,
    "invert": "auto",
    "mean": 0.0,
    "std": 1.0,
    "resize": "stretch",
    "resample": "lanczos",
}


def _walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Leaf layers of nested Sequentials, in execution order."""
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix, module


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _packed_layer(layer: nn.Module) -> PackedLayer | None:
    """The `PackedLayer` of a compressed (or already converted) Linear/Conv2d; None for a plain one."""
    if isinstance(layer, PackedLayer):
        return layer
    if isinstance(layer, CompressedMixin):
        return pack_layer(layer)
    return None


def _weight_and_act(name: str, layer: nn.Module) -> tuple[Tensor, torch.Tensor | None, dict[str, Any] | None]:
    """(stored weight, float bias, input quantization) of a Linear/Conv2d, compressed or not."""
    packed = _packed_layer(layer)
    if packed is None:
        bias = getattr(layer, "bias", None)
        return _np(layer.weight), None if bias is None else bias.detach(), None  # type: ignore[arg-type]
    weight: Tensor = packed.packed_weight
    if isinstance(layer, CompressedMixin):  # the stored weight must be the one the model computes with
        with torch.no_grad():
            expected = layer.compress_weight(layer.weight).detach().cpu().float().numpy()
        if not np.array_equal(weight.dequantize(), expected):
            raise ConfigError(f"export: layer {name}: the packed weight does not reproduce the layer's weight")
    if weight.encoding == "float":  # float32 values: the artifact stores them as an f32 tensor
        weight = weight.dequantize()
    act = None
    if packed.act is not None:
        bits = int(packed.act.bits)
        qmin, qmax = 0, 2**bits - 1  # activations are quantized asymmetrically per tensor
        if packed.act.scale > 0:
            act = {
                "bits": bits,
                "scale": float(np.float32(packed.act.scale)),
                "zero_point": int(packed.act.zero_point),
                "qmin": qmin,
                "qmax": qmax,
            }
        else:
            act = {"bits": bits, "dynamic": True, "qmin": qmin, "qmax": qmax}
    return weight, packed.bias, act


def _weight_rule(layer: nn.Module) -> dict[str, Any] | None:
    """How the layer compresses a weight it is given (the runtime re-applies it to adapted weights)."""
    order = getattr(layer, "cq_order", ())
    if "cq_weight" in order:
        q = layer.cq_weight
        if q.learnable:
            return {"rule": "fixed", "symmetric": bool(q.symmetric)}
        return {
            "rule": "observer",
            "bits": int(q.bits),
            "symmetric": bool(q.symmetric),
            "per_channel": bool(q.per_channel),
            "observer": str(q.observer),
            "percentile": float(q.percentile),
        }
    if "cq_codebook" in order:
        return {"rule": "codebook"}
    if isinstance(layer, PackedLayer) and layer.packed_weight.encoding == "affine":
        return {"rule": "fixed", "symmetric": bool(layer.packed_weight.symmetric)}
    return None


def _conv_params(layer: Any, name: str) -> tuple[int, int | list[int]]:
    """(stride, padding) as the artifact records them: padding is one integer when it is the same
    along both axes (every square model's form) and `[ph, pw]` otherwise (a series' `[0, 1]`)."""
    if isinstance(layer, PackedLayer):
        conv = layer.conv
    else:
        conv = {
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "groups": layer.groups,
        }
    stride, padding = tuple(conv.get("stride", (1, 1))), conv.get("padding", (0, 0))
    ok = (
        conv.get("groups", 1) == 1
        and tuple(conv.get("dilation", (1, 1))) == (1, 1)
        and not isinstance(padding, str)
        and getattr(layer, "padding_mode", "zeros") == "zeros"
        and stride[0] == stride[1]
    )
    if not ok:
        raise ConfigError(
            f"export: conv layer {name} uses groups, dilation, unequal strides or a padding mode other than zeros, "
            "which the artifact lacks"
        )
    return int(stride[0]), pair_spec(int(padding[0]), int(padding[1]))


def _hw(value: Any) -> tuple[int, int]:
    """A PyTorch size argument (an int, or a pair) as (height, width)."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _layer_specs(layers: list[tuple[str, nn.Module]], tensors: dict[str, Tensor]) -> list[dict[str, Any]]:
    """The specs of consecutive layers (a layer's successor decides whether a conv bias is stored)."""
    out: list[dict[str, Any]] = []
    for i, (name, layer) in enumerate(layers):
        spec = _layer_spec(name, layer, layers[i + 1][1] if i + 1 < len(layers) else None, tensors)
        if isinstance(spec, list):
            out += spec
        elif spec is not None:
            out.append(spec)
    return out


def _layer_spec(
    name: str, layer: nn.Module, nxt: nn.Module | None, tensors: dict[str, Tensor]
) -> dict[str, Any] | list[dict[str, Any]] | None:
    if isinstance(layer, ResidualStage):  # main + shortcut, then what follows their sum
        main, shortcut, tail = layer.branches()
        residual = {
            "op": "residual",
            "name": name,
            "main": _layer_specs([(f"{name}.{n}", m) for n, m in main], tensors),
            "shortcut": _layer_specs([(f"{name}.{n}", m) for n, m in shortcut], tensors),
        }
        return [residual, *_layer_specs([(f"{name}.{n}", m) for n, m in tail], tensors)]
    kind = layer.kind if isinstance(layer, PackedLayer) else None
    if isinstance(layer, (nn.Conv2d, nn.Linear)) or kind in ("conv2d", "linear"):
        conv = isinstance(layer, nn.Conv2d) or kind == "conv2d"
        weight, bias, act = _weight_and_act(name, layer)
        tensors[f"{name}.weight"] = weight
        spec: dict[str, Any] = {
            "op": "conv2d" if conv else "linear",
            "name": name,
            "weight": f"{name}.weight",
            "bias": None,
        }
        if conv:
            spec["stride"], spec["padding"] = _conv_params(layer, name)
        spec["input_quant"] = act
        if (
            not conv
        ):  # the runtime adapts linear weights (a head) only; it re-compresses them as the layer does
            spec["weight_quant"] = _weight_rule(layer)
        # A conv bias right before a batch-statistics BatchNorm is subtracted out again with the
        # batch mean: it changes nothing, so it is not stored.
        if bias is not None and not (conv and isinstance(nxt, BatchNorm)):
            tensors[f"{name}.bias"] = _np(bias)
            spec["bias"] = f"{name}.bias"
        return spec
    if isinstance(layer, BatchNorm):
        weight, bias = layer.weight.detach(), layer.bias.detach()
        compress_params = getattr(layer, "compress_params", None)
        if compress_params is not None:  # the BatchNorm after a channel-pruned layer
            weight, bias = compress_params(weight, bias)
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = _np(weight), _np(bias)
        return {
            "op": "batchnorm",
            "name": name,
            "weight": f"{name}.weight",
            "bias": f"{name}.bias",
            "eps": layer.eps,
        }
    if isinstance(layer, nn.ReLU):
        return {"op": "relu"}
    if isinstance(layer, nn.LeakyReLU):
        return {"op": "leaky_relu", "slope": float(layer.negative_slope)}
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        size = layer.output_size
        if size not in (1, (1, 1)):
            raise ConfigError(f"export: adaptive average pool {name} must pool to 1x1, got {size}")
        return {"op": "global_avgpool"}
    if isinstance(layer, nn.MaxPool2d):
        k, s = _hw(layer.kernel_size), _hw(layer.stride if layer.stride is not None else layer.kernel_size)
        if k != s or layer.padding not in (0, (0, 0)) or layer.dilation not in (1, (1, 1)) or layer.ceil_mode:
            raise ConfigError(f"export: max-pool {name} must have kernel == stride, no padding, floor mode")
        return {"op": "maxpool2d", "kernel": pair_spec(*k)}
    if isinstance(layer, (Flatten, nn.Flatten)):
        return {"op": "flatten"}
    if isinstance(layer, nn.Identity):
        return None
    raise ConfigError(
        f"export: layer {name} ({type(layer).__name__}) has no artifact form; "
        "supported: Conv2d, Linear, BatchNorm, ReLU, LeakyReLU, MaxPool2d, AdaptiveAvgPool2d(1), Flatten and "
        "ResNet-12 stages (the mlp, conv4 and resnet12 backbones)"
    )


def _algorithm(algorithm: Any, meta: Any, model: nn.Module) -> Any:
    """The Algorithm to ask how the runtime adapts: given, built from `meta`, or from a name."""

    if isinstance(algorithm, Algorithm):
        return algorithm
    if meta is not None:
        if algorithm is not None and algorithm != meta.algorithm:
            raise ConfigError(f"export: algorithm {algorithm!r} disagrees with meta.algorithm {meta.algorithm!r}")
        return build_algorithm(meta, model=model)
    return build_algorithm(algorithm or MetaConfig(), model=model)  # MetaConfig's default algorithm


def artifact_from_model(
    model: nn.Module,
    *,
    algorithm: Any = None,
    extras: Mapping[str, torch.Tensor] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    adaptation_scope: str | None = None,
    adaptation: Mapping[str, Any] | None = None,
    meta: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The manifest (without the tensor table) and the tensors of `model`'s artifact.

    `algorithm` (an Algorithm, a name, or None with `meta` its MetaConfig; default protonet) says
    how the runtime adapts (`Algorithm.deployment`), with `extras` its learned tensors (Meta-SGD's
    rates); `adaptation_scope` narrows what the runtime may move.
    """
    algo = _algorithm(algorithm, meta, model)
    deployment = algo.deployment(model, dict(extras or {}), adaptation_scope)
    features = getattr(model, "features", None)
    if features is None or not hasattr(model, "head"):
        raise ConfigError("export: the model must be a fewbit Backbone (`.features` then `.head`)")
    pre = dict(DEFAULT_PREPROCESSING)
    pre.update(preprocessing or {})
    if pre.get("kind", "image") != "image":  # image defaults are no part of another kind's record
        pre = dict(preprocessing or {})
    tensors: dict[str, Tensor] = {}
    layers = _layer_specs(list(_walk(features, "features")), tensors)
    if not layers or layers[-1]["op"] != "flatten":
        layers.append({"op": "flatten"})  # Backbone.forward flattens the features
    embedding_layers = len(layers)
    # An algorithm that classifies by prototypes never uses a head: none is stored.
    head_spec = _layer_spec("head", model.head, None, tensors) if deployment.ships_head else None
    if isinstance(head_spec, dict):
        layers.append(head_spec)
    input_shape = _input_shape(layers, tensors, pre)
    tensors.update({name: _np(t) for name, t in deployment.tensors.items()})
    adapt_block = dict(deployment.adaptation)
    adapt_block.update(adaptation or {})
    manifest = {
        "format": "fewbit",
        "producer": f"fewbit {__version__}",
        "algorithm": algo.name,
        "architecture": {
            "name": str(getattr(model, "arch", type(model).__name__)),
            "input_shape": input_shape,
            "embedding_layers": embedding_layers,
            "layers": layers,
        },
        "preprocessing": pre,
        "adaptation": adapt_block,
    }
    if extra:
        manifest["source"] = dict(extra)
    return manifest, tensors


def _input_shape(layers: list[dict[str, Any]], tensors: Mapping[str, Tensor], pre: dict[str, Any]) -> list[int]:
    """The model's input shape from its first layer, checked against (and completing) `pre` in place."""
    first = next((lay for lay in layers if lay["op"] in ("conv2d", "linear", "residual")), None)
    if first is not None and first["op"] == "residual":
        first = first["main"][0]
    if pre.get("kind", "image") != "image":  # a table, a series: the preprocessing says the input shape
        try:
            shape = list(preprocessing_from_dict(pre).input_shape)
        except ValueError as exc:
            raise ConfigError(f"export: {exc}") from None
        fan = int(tensors[first["weight"]].shape[1]) if first is not None else None
        want = math.prod(shape) if first is not None and first["op"] == "linear" else shape[0]
        if first is None or fan != want:
            raise ConfigError(f"preprocessing: the model's first layer ({first and first['op']}) takes {fan} inputs, "
                              f"its {pre.get('kind')} inputs {shape} give {want}")
        return shape
    size = int(pre["image_size"])
    if first is not None and first["op"] == "conv2d":
        pre["channels"] = int(tensors[first["weight"]].shape[1])
    elif first is not None:
        fan = int(tensors[first["weight"]].shape[1])
        channels = max(1, fan // (size * size))
        if channels * size * size != fan:
            raise ConfigError(
                f"preprocessing.image_size: {size} does not give the {fan} inputs of layer {first['name']}"
            )
        pre["channels"] = channels
    shape = [int(pre["channels"]), size, size]
    try:
        pre.update(preprocessing_from_dict(pre).to_dict())
    except ValueError as exc:
        raise ConfigError(f"export: {exc}") from None
    return shape


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    algorithm: Any = None,
    extras: Mapping[str, torch.Tensor] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    adaptation_scope: str | None = None,
    adaptation: Mapping[str, Any] | None = None,
    meta: Any | None = None,
    format: str = "fewbit",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `model` as a `.fewbit` artifact (or, with `format="onnx"`, an ONNX QDQ graph) at `path`.

        >>> run = fewbit.train.load_run("runs/glyphs-w4a8")
        >>> export(run.model, "model.fewbit", algorithm=run.algorithm, extras=run.extras,
        ...        preprocessing=run.preprocessing.to_dict())

    Returns `{"path", "format", "bytes", "float32_bytes", "ratio"}`. The algorithm (an Algorithm,
    a name, or `meta`, its MetaConfig) decides how the runtime adapts (`Algorithm.deployment`:
    prototypes, or SGD on the head plus biases and norms when `adaptation_scope` allows);
    `preprocessing` is how inputs are prepared (a run's `preprocessing.to_dict()`).
    """
    algo = _algorithm(algorithm, meta, model)
    manifest, tensors = artifact_from_model(
        model,
        algorithm=algo,
        extras=extras,
        preprocessing=preprocessing,
        adaptation_scope=adaptation_scope,
        adaptation=adaptation,
        meta=meta,
        extra=extra,
    )
    if format == "onnx":

        nbytes = write_onnx(path, manifest, tensors)
    elif format == "fewbit":
        nbytes = write_artifact(path, manifest, tensors)
    else:
        raise ConfigError(f"export: format must be fewbit or onnx, got {format!r}")
    ships_head = manifest["architecture"]["embedding_layers"] < len(manifest["architecture"]["layers"])
    f32 = 4 * sum(
        p.numel()
        for n, p in model.named_parameters()
        if not is_compression_name(n) and (ships_head or not n.startswith("head."))
    )
    return {
        "path": str(path),
        "format": format,
        "bytes": nbytes,
        "float32_bytes": f32,
        "ratio": f32 / max(nbytes, 1),
    }


def export_onnx(model: nn.Module, path: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """`export(model, path, format="onnx", ...)`: an ONNX QDQ graph checked by onnx's checker."""
    return export(model, path, format="onnx", **kwargs)
