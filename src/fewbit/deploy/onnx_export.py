"""ONNX export in QDQ style: weights as integer initializers behind DequantizeLinear, quantized
input activations through QuantizeLinear/DequantizeLinear, and batch-statistics BatchNorm
written out with ReduceMean (ONNX's BatchNormalization would use stored running statistics).

The graph is built from the same manifest and tensors as the `.fewbit` artifact, so both formats
come from one description of the model. Inputs `x [N, C, H, W]` float32; outputs `embedding`
and, when the model has a head, `logits`. Opset 17.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit._io import atomic_write_bytes
from fewbit.artifact.format import Tensor
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import FewbitError
from fewbit.runtime.ops import pair

OPSET = 17
INSTALL = "pip install 'fewbit[onnx]'"


def require_onnx() -> Any:
    """The `onnx` module; FewbitError saying how to install it when it cannot be imported (ONNX
    export is an optional extra)."""
    try:
        import onnx
    except ImportError:
        raise FewbitError(f"ONNX export needs the onnx package, an optional extra: {INSTALL}") from None
    return onnx


class _Graph:
    def __init__(self) -> None:
        onnx = require_onnx()
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.inits.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _weight(g: _Graph, name: str, t: Tensor) -> str:
    """A float weight: DequantizeLinear of integer codes, a codebook Gather, or a float initializer."""
    if not isinstance(t, PackedTensor):
        return g.const(np.asarray(t, np.float32), name)
    if t.codebook is not None:
        codes = t.code_array()  # 0 where pruned
        book = t.codebook.astype(np.float32)
        if t.mask is not None:  # an extra zero entry for pruned weights
            book = np.append(book, np.float32(0))
            codes = np.where(t.mask, codes, len(book) - 1)
        return g.op(
            "Gather",
            [g.const(book, f"{name}.codebook"), g.const(codes.astype(np.int64), f"{name}.codes")],
            f"{name}.dq",
        )
    zero_point = t.zero_points()
    zp_full = t.per_channel(zero_point)
    codes = t.code_array() if t.mask is None else np.where(t.mask, t.code_array(), zp_full)  # pruned -> exactly 0
    signed = codes.min(initial=0) < 0 or zero_point.min(initial=0) < 0
    dtype = np.int8 if signed else np.uint8
    if not (np.iinfo(dtype).min <= codes.min() and codes.max() <= np.iinfo(dtype).max):
        raise ValueError(f"{name}: codes do not fit {dtype.__name__}")
    per_channel = t.axis is not None and t.scale.size > 1
    scale = t.scale.astype(np.float32).reshape(-1) if per_channel else t.scale.astype(np.float32).reshape(())
    zp = zero_point.astype(dtype).reshape(-1) if per_channel else zero_point.astype(dtype).reshape(())
    if per_channel and zp.size != scale.size:
        zp = np.broadcast_to(zp, scale.shape).astype(dtype)
    attrs = {"axis": int(t.axis)} if per_channel else {}
    return g.op(
        "DequantizeLinear",
        [
            g.const(codes.astype(dtype), f"{name}.codes"),
            g.const(scale, f"{name}.scale"),
            g.const(zp, f"{name}.zero_point"),
        ],
        f"{name}.dq",
        **attrs,
    )


def _input_quant(g: _Graph, x: str, spec: Mapping[str, Any] | None, hint: str) -> str:
    if not spec:
        return x
    qmin, qmax = int(spec["qmin"]), int(spec["qmax"])
    if not spec.get("dynamic") and (qmin, qmax) == (0, 255):
        scale = g.const(np.float32(spec["scale"]), f"{hint}.act_scale")
        zp = g.const(np.uint8(spec["zero_point"]), f"{hint}.act_zp")
        q = g.op("QuantizeLinear", [x, scale, zp], f"{hint}.q")
        return g.op("DequantizeLinear", [q, scale, zp], f"{hint}.dq")
    # Fewer than 8 bits, or a range taken from each batch: the same arithmetic written out.
    f32 = lambda v, n: g.const(np.float32(v), f"{hint}.{n}")  # noqa: E731
    if spec.get("dynamic"):
        lo = g.op("Min", [g.op("ReduceMin", [x], f"{hint}.min", keepdims=0), f32(0, "zero")], f"{hint}.lo")
        hi = g.op("Max", [g.op("ReduceMax", [x], f"{hint}.max", keepdims=0), f32(0, "zero")], f"{hint}.hi")
        span = g.op(
            "Div", [g.op("Sub", [hi, lo], f"{hint}.span"), f32(qmax - qmin, "levels")], f"{hint}.raw_scale"
        )
        scale = g.op("Max", [span, f32(1e-8, "eps")], f"{hint}.scale")
        zp = g.op(
            "Clip",
            [
                g.op(
                    "Round",
                    [g.op("Div", [g.op("Neg", [lo], f"{hint}.neg"), scale], f"{hint}.zd")],
                    f"{hint}.zr",
                ),
                f32(qmin, "qmin"),
                f32(qmax, "qmax"),
            ],
            f"{hint}.zp",
        )
    else:
        scale, zp = f32(spec["scale"], "scale"), f32(spec["zero_point"], "zp")
    t = g.op(
        "Add", [g.op("Round", [g.op("Div", [x, scale], f"{hint}.div")], f"{hint}.round"), zp], f"{hint}.add"
    )
    q = g.op("Clip", [t, f32(qmin, "qmin2"), f32(qmax, "qmax2")], f"{hint}.clip")
    return g.op("Mul", [g.op("Sub", [q, zp], f"{hint}.sub"), scale], f"{hint}.deq")


def _batchnorm(g: _Graph, x: str, layer: Mapping[str, Any], tensors: Mapping[str, Tensor], rank: int) -> str:
    name = layer["name"]
    axes = [0] if rank == 2 else [0, 2, 3]
    shape = [1, -1] if rank == 2 else [1, -1, 1, 1]
    mean = g.op("ReduceMean", [x], f"{name}.mean", axes=axes, keepdims=1)
    xc = g.op("Sub", [x, mean], f"{name}.centered")
    var = g.op("ReduceMean", [g.op("Mul", [xc, xc], f"{name}.sq")], f"{name}.var", axes=axes, keepdims=1)
    eps = g.const(np.float32(layer.get("eps", 1e-5)), f"{name}.eps")
    inv = g.op(
        "Reciprocal",
        [g.op("Sqrt", [g.op("Add", [var, eps], f"{name}.vareps")], f"{name}.std")],
        f"{name}.inv",
    )
    gamma = g.const(np.asarray(tensors[layer["weight"]], np.float32).reshape(shape), f"{name}.weight")
    beta = g.const(np.asarray(tensors[layer["bias"]], np.float32).reshape(shape), f"{name}.bias")
    scaled = g.op("Mul", [g.op("Mul", [xc, inv], f"{name}.xhat"), gamma], f"{name}.scaled")
    return g.op("Add", [scaled, beta], f"{name}.out")


def _emit(g: _Graph, x: str, layer: Mapping[str, Any], tensors: Mapping[str, Tensor], rank: int) -> tuple[str, int]:
    """The nodes of one layer on input `x` of `rank`; returns (its output, the output's rank)."""
    op = layer["op"]
    if op == "conv2d":
        xin = _input_quant(g, x, layer.get("input_quant"), layer["name"])
        inputs = [xin, _weight(g, layer["name"] + ".weight", tensors[layer["weight"]])]
        if layer.get("bias"):
            inputs.append(g.const(np.asarray(tensors[layer["bias"]], np.float32), layer["name"] + ".bias"))
        w_shape = tensors[layer["weight"]].shape
        ph, pw = pair(layer.get("padding", 0), "conv2d padding", 0, 16)
        s = int(layer.get("stride", 1))
        x = g.op("Conv", inputs, layer["name"], kernel_shape=list(w_shape[2:]), pads=[ph, pw, ph, pw], strides=[s, s])
    elif op == "linear":
        xin = _input_quant(g, x, layer.get("input_quant"), layer["name"])
        inputs = [xin, _weight(g, layer["name"] + ".weight", tensors[layer["weight"]])]
        if layer.get("bias"):
            inputs.append(g.const(np.asarray(tensors[layer["bias"]], np.float32), layer["name"] + ".bias"))
        x = g.op("Gemm", inputs, layer["name"], transB=1)
    elif op == "batchnorm":
        x = _batchnorm(g, x, layer, tensors, rank)
    elif op == "relu":
        x = g.op("Relu", [x], "relu")
    elif op == "leaky_relu":
        x = g.op("LeakyRelu", [x], "leaky_relu", alpha=float(layer.get("slope", 0.01)))
    elif op == "maxpool2d":
        kh, kw = pair(layer.get("kernel", 2), "maxpool2d kernel", 1, 16)
        x = g.op("MaxPool", [x], "maxpool", kernel_shape=[kh, kw], strides=[kh, kw])
    elif op == "global_avgpool":
        x = g.op("GlobalAveragePool", [x], "avgpool")
    elif op == "residual":
        outs = []
        for key in ("main", "shortcut"):
            h, r = x, rank
            for sub in layer[key]:
                h, r = _emit(g, h, sub, tensors, r)
            outs.append(h)
        x = g.op("Add", outs, layer.get("name", "residual") + ".add")
    elif op == "flatten":
        x = g.op("Flatten", [x], "flatten", axis=1)
        rank = 2
    else:
        raise ValueError(f"onnx export: layer op {op!r} has no ONNX form here")
    return x, rank


def build_onnx(manifest: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Any:
    """The `onnx.ModelProto` of an artifact's manifest and tensors; FewbitError naming the extra to
    install when `onnx` is missing."""
    onnx = require_onnx()
    TensorProto, helper = onnx.TensorProto, onnx.helper  # noqa: N806  (onnx's own names)

    g = _Graph()
    arch = manifest["architecture"]
    x = "x"
    rank = 1 + len(arch["input_shape"])
    embedding = None
    for i, layer in enumerate(arch["layers"]):
        x, rank = _emit(g, x, layer, tensors, rank)
        if i + 1 == arch["embedding_layers"]:
            embedding = g.op("Identity", [x], "embedding_out")
    outputs = [helper.make_tensor_value_info(embedding or x, TensorProto.FLOAT, None)]
    if embedding is not None and embedding != x and arch["embedding_layers"] < len(arch["layers"]):
        outputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, None))
    # stable public names
    final_nodes = [helper.make_node("Identity", [outputs[0].name], ["embedding"], name="embedding")]
    named = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", None])]
    if len(outputs) == 2:
        final_nodes.append(helper.make_node("Identity", [outputs[1].name], ["logits"], name="logits"))
        named.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None]))
    graph = helper.make_graph(
        g.nodes + final_nodes,
        f"fewbit_{arch.get('name', 'model')}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *arch["input_shape"]])],
        named,
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fewbit")
    model.ir_version = 8
    meta = {k: v for k, v in manifest.items() if k not in ("tensors", "payload")}
    helper.set_model_props(model, {"fewbit.manifest": json.dumps(meta, separators=(",", ":"))})
    onnx.checker.check_model(model)
    return model


def write_onnx(
    path: str | os.PathLike[str], manifest: Mapping[str, Any], tensors: Mapping[str, Tensor]
) -> int:
    """Write the ONNX graph atomically; returns its size in bytes."""

    data = build_onnx(manifest, tensors).SerializeToString()
    atomic_write_bytes(path, data)
    return len(data)
