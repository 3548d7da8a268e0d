"""The generated C's data: const arrays of packed weights (counted as weight bytes) and the head
fine-tuning configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fewbit.artifact.format import Artifact
from fewbit.artifact.packing import encode_mask, index_bits, packed_nbytes
from fewbit.artifact.tensor import PackedTensor
from fewbit.deploy.c_export.literals import float_literal
from fewbit.errors import ConfigError
from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.ops import LinearOp
from fewbit.runtime.requant import qrange
from fewbit.runtime.settings import SGD, scope_parts

_MASKS = {None: 0, "bitmap": 1, "indices": 2, "rice": 3}

_PAD = b"\0\0\0\0"  # the bit reader loads 4 bytes at a time


class Emitter:
    """Collects the generated C: const arrays (counted as weight bytes) and the stage table."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.weight_bytes = 0

    def array(self, name: str, ctype: str, values: Any, *, pad: bool = False) -> str:
        if ctype == "uint8_t":
            data = bytes(values) + (_PAD if pad else b"")
            body = ", ".join(f"0x{b:02x}" for b in data) or "0"
            self.weight_bytes += len(data)
            count = max(1, len(data))
        else:
            arr = np.asarray(values).reshape(-1)
            if ctype == "float":
                items = [float_literal(float(v)) for v in arr.astype(np.float32)]
                self.weight_bytes += 4 * arr.size
            else:
                items = [str(int(v)) for v in arr]
                self.weight_bytes += np.dtype({"int32_t": np.int32, "int16_t": np.int16}[ctype]).itemsize * arr.size
            body = ", ".join(items) or "0"
            count = max(1, arr.size)
        wrapped = _wrap(body)
        self.lines.append(f"static const {ctype} {name}[{count}] = {{\n{wrapped}\n}};")
        return name


def _wrap(body: str, width: int = 110) -> str:
    out, line = [], "    "
    for item in body.split(", "):
        if len(line) + len(item) + 2 > width and line.strip():
            out.append(line.rstrip())
            line = "    "
        line += item + ", "
    out.append(line.rstrip().rstrip(","))
    return "\n".join(out)


def weight_arrays(em: Emitter, prefix: str, tensor: Any, fields: dict[str, Any]) -> int:
    """Emit a stage's packed weight; fills the struct fields; returns the largest |integer weight|."""
    fields.update(wenc=0, bits=0, code_min=0, code_step=1, codes="0", zp="0", zp_n=0, scale="0", scale_n=0)
    fields.update(book="0", fvals="0", mask_format=0, mask="0", index_bits=0, rice_k=0, rice_unary_offset=0)
    if isinstance(tensor, PackedTensor):
        numel, kept = tensor.numel, tensor.kept
        fields.update(bits=tensor.bits, code_min=tensor.code_min, code_step=tensor.code_step, kept=kept, numel=numel)
        fields["codes"] = em.array(f"{prefix}_codes", "uint8_t", tensor.codes, pad=True)
        mask_format, mask_data = tensor.mask_format, tensor.mask_data
        if tensor.codebook is not None:
            fields["wenc"] = 1
            fields["book"] = em.array(f"{prefix}_book", "float", tensor.codebook)
            max_abs = 0
        else:
            assert tensor.scale is not None
            fields["scale"] = em.array(f"{prefix}_scale", "float", tensor.scale)
            fields["scale_n"] = int(tensor.scale.size)
            if tensor.zero_point is not None:
                fields["zp"] = em.array(f"{prefix}_zp", "int32_t", tensor.zero_point)
                fields["zp_n"] = int(tensor.zero_point.size)
            max_abs = int(np.abs(tensor.integer_weights()).max()) if numel else 0
    else:
        flat = np.asarray(tensor, np.float32).reshape(-1)
        keep = flat != 0
        numel, kept = flat.size, int(keep.sum())
        mask_format = mask_data = None
        if kept < numel:
            fmt, data = encode_mask(keep)
            if 4 * kept + len(data) < 4 * numel:
                mask_format, mask_data, flat = fmt, data, flat[keep]
        kept = flat.size if mask_format is None else kept
        fields.update(wenc=2, bits=32, kept=kept, numel=numel)
        fields["fvals"] = em.array(f"{prefix}_fvals", "float", flat)
        max_abs = 0
    if mask_format is not None and mask_data is not None:
        fields["mask_format"] = _MASKS[mask_format]
        fields["mask"] = em.array(f"{prefix}_mask", "uint8_t", mask_data, pad=True)
        fields["index_bits"] = index_bits(numel)
        if mask_format == "rice":
            k = mask_data[0]
            fields["rice_k"] = k
            fields["rice_unary_offset"] = 1 + (packed_nbytes(kept, k) if k else 0)
    return max_abs


def pixel_major(tensor: Any) -> Any:
    """A conv weight `[cout, cin, kh, kw]` re-packed in `[cout, kh, kw, cin]` order (the order of the
    C runtime's im2col rows); other weights as they are."""
    if len(tensor.shape) != 4:
        return tensor
    if not isinstance(tensor, PackedTensor):
        return np.ascontiguousarray(np.asarray(tensor).transpose(0, 2, 3, 1))
    codes = tensor.code_array().transpose(0, 2, 3, 1)
    mask = None if tensor.mask is None else tensor.mask.transpose(0, 2, 3, 1)
    if tensor.codebook is not None:
        return PackedTensor.from_codes(codes, tensor.bits, mask=mask, codebook=tensor.codebook)
    return PackedTensor.from_codes(
        codes, tensor.bits, scale=tensor.scale, zero_point=tensor.zero_point, axis=tensor.axis, mask=mask
    )


def head_config(
    em: Emitter, model: RuntimeModel, artifact: Artifact, settings: Mapping[str, Any], max_ways: int
) -> dict[str, Any] | None:
    """The head fine-tuning configuration (None for ProtoNet-style adaptation)."""
    if settings["method"] != SGD:
        return None
    init = {"own": 0, "zeros": 1, "prototypes": 2}[settings["head_init"]]
    cfg: dict[str, Any] = {
        "FB_HEAD_STEPS": int(settings["steps"]),
        "FB_HEAD_LR": float_literal(float(np.float32(settings["lr"]))),
        "FB_HEAD_INIT": init,
        "FB_HAS_OWN_HEAD": 0,
        "FB_HEAD_WAYS": 0,
        "FB_HEAD_HAS_IQ": 0,
        "FB_HEAD_MOVES": int("head" in scope_parts(str(settings["scope"]))),
        "FB_HEAD_RULE": 0,
    }
    name = model.head_weight_name()
    if init == 0 and name is not None:
        linear = model.layers[-1]
        assert isinstance(linear, LinearOp)
        if linear.out_features > max_ways:
            raise ConfigError(f"C export: the head has {linear.out_features} ways, more than max_ways={max_ways}")
        stored = artifact.tensors[name]
        w0 = model.float_tensor(name)
        cfg.update(FB_HAS_OWN_HEAD=1, FB_HEAD_WAYS=linear.out_features)
        em.array("fb_head_w0", "float", w0)
        bias = model.params[linear.bias_name] if linear.bias_name else np.zeros(linear.out_features, np.float32)
        em.array("fb_head_b0", "float", bias)
        mask = stored.mask if isinstance(stored, PackedTensor) else None
        bits = np.packbits(np.ones(w0.size, bool) if mask is None else mask.reshape(-1), bitorder="little")
        em.array("fb_head_mask", "uint8_t", bits.tobytes())
        if linear.input_quant is not None:
            q = linear.input_quant
            cfg.update(
                FB_HEAD_HAS_IQ=1,
                FB_HEAD_IQ_DYNAMIC=int(q.dynamic),
                FB_HEAD_IQ_SCALE=float_literal(float(q.scale)) if not q.dynamic else "0.0f",
                FB_HEAD_IQ_ZERO=q.zero_point,
                FB_HEAD_IQ_QMIN=q.qmin,
                FB_HEAD_IQ_QMAX=q.qmax,
            )
        rule = linear.weight_rule
        if rule is not None and isinstance(stored, PackedTensor):
            cfg.update(head_rule(em, rule, stored))
    return cfg


def head_rule(em: Emitter, rule: Mapping[str, Any], stored: PackedTensor) -> dict[str, Any]:

    kind = rule.get("rule")
    if kind == "fixed" and stored.scale is not None:
        symmetric = bool(rule.get("symmetric", True))
        qmin, qmax = qrange(stored.bits, symmetric)
        em.array("fb_head_scale", "float", stored.scale)
        em.array("fb_head_zp", "int32_t", stored.zero_points())
        return {
            "FB_HEAD_RULE": 1,
            "FB_HEAD_SCALE_N": int(stored.scale.size),
            "FB_HEAD_ZP_N": int(stored.zero_points().size),
            "FB_HEAD_QMIN": qmin,
            "FB_HEAD_QMAX": qmax,
            "FB_HEAD_ONE_BIT": int(stored.bits == 1 and qmin == -1),
        }
    if kind == "observer" and rule.get("observer", "minmax") == "minmax":
        bits, symmetric = int(rule["bits"]), bool(rule["symmetric"])
        qmin, qmax = qrange(bits, symmetric)
        return {
            "FB_HEAD_RULE": 2,
            "FB_HEAD_BITS": bits,
            "FB_HEAD_SYMMETRIC": int(symmetric),
            "FB_HEAD_PER_CHANNEL": int(bool(rule.get("per_channel"))),
            "FB_HEAD_QMIN": qmin,
            "FB_HEAD_QMAX": 1 if bits == 1 and symmetric else qmax,
        }
    if kind == "codebook" and stored.codebook is not None:
        em.array("fb_head_book", "float", stored.codebook)
        return {"FB_HEAD_RULE": 3, "FB_HEAD_BOOK_N": int(stored.codebook.size)}
    raise ConfigError(
        f"C export: the head re-quantizes with rule {kind!r} / observer {rule.get('observer')!r}; the C runtime has "
        "min-max observers, fixed grids and codebooks"
    )
