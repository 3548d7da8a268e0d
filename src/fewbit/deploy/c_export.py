"""Export a `.fewbit` artifact as a self-contained C99 library that adapts on the device.

    report = fewbit.deploy.export_c("model.fewbit", "model_c/")
    print(report["flash_bytes"], report["arena_bytes"], report["fits"])
    # then: make -C model_c && model_c/example support.bin query.bin

The folder holds `fewbit_model.h` (the API), `fewbit_model.c` (the packed weights as `const`
arrays, so they stay in flash, and the kernels), `example_main.c` and a `Makefile`. Nothing is
allocated: the caller passes one arena of `FEWBIT_ARENA_BYTES`, a size computed here from the
architecture, `max_ways` and `max_support`.

What runs on the device is the artifact's network with BatchNorm statistics taken from the
support set and frozen, each image then embedded on its own (`norm_stats: support`,
`fewbit.runtime.support_stats`): a per-image API in a few hundred KB cannot hold a batch. The
numpy runtime runs the same mode (`fewbit.runtime.adapt(..., norm_stats="support")`), so the two
can be compared: on an integer body (integer weights, static activation quantization of at most
8 bits) every layer is int8 x low-bit weights with int32 accumulators and fixed-point
requantization (`fewbit.runtime.fixedpoint`), and the Q16 embeddings agree bit for bit; a body
with float parts runs in float32 and agrees to rounding. Head fine-tuning and distances are float.

Work is bounded before it starts: the export refuses (ConfigError, one line) what the C runtime
cannot reproduce, such as layers beyond conv/linear/batchnorm/relu/maxpool/flatten, activation
ranges taken per batch, body adaptation, or integer sums that could overflow for `max_support`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fewbit import __version__
from fewbit.artifact.format import Artifact, decode_artifact, read_artifact
from fewbit.artifact.packing import encode_mask, index_bits, packed_nbytes
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import ConfigError, FewbitFormatError
from fewbit.runtime import fixedpoint
from fewbit.runtime.adapt import scope_parts, settings_for
from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.ops import InputQuant, Linear
from fewbit.runtime.support_stats import Stage, accumulator_bound, body_stages, integer_body

DEFAULT_RAM = 256 * 1024
DEFAULT_FLASH = 1024 * 1024
WEIGHT_SCRATCH_BYTES = 72 * 1024  # unpacked weights of one layer (or of a group of its channels)
TRANSPOSE_BELOW = 32  # a layer with fewer inputs per output computes across output channels
_MASKS = {None: 0, "bitmap": 1, "indices": 2, "rice": 3}
_PAD = b"\0\0\0\0"  # the bit reader loads 4 bytes at a time


@dataclasses.dataclass(frozen=True, kw_only=True)
class CTarget:
    """A device budget: `ram_bytes` for the arena, `flash_bytes` for weights and code."""

    ram_bytes: int = DEFAULT_RAM
    flash_bytes: int = DEFAULT_FLASH

    def __post_init__(self) -> None:
        for name in ("ram_bytes", "flash_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"CTarget.{name} must be a positive number of bytes")

    def describe(self) -> str:
        return f"{_kb(self.ram_bytes)} RAM / {_kb(self.flash_bytes)} flash"


def _kb(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n % (1024 * 1024) == 0 else f"{n // 1024} KB" if n % 1024 == 0 else f"{n} B"


class _Emitter:
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
                items = [_float_literal(float(v)) for v in arr.astype(np.float32)]
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


def _float_literal(v: float) -> str:
    if not math.isfinite(v):
        raise ConfigError("C export: a weight or parameter is not finite")
    return f"{v.hex()}f" if v != 0 else "0.0f"


def _double_literal(v: float) -> str:
    if not math.isfinite(v):
        raise ConfigError("C export: a parameter is not finite")
    return v.hex() if v != 0 else "0.0"


def _load(source: str | os.PathLike[str] | bytes) -> tuple[Artifact, RuntimeModel, str]:
    try:
        if isinstance(source, (bytes, bytearray)):
            artifact = decode_artifact(bytes(source))
            where = "artifact bytes"
        else:
            artifact = read_artifact(source)
            where = str(source)
        return artifact, RuntimeModel(artifact), where
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FewbitFormatError(f"malformed manifest ({type(exc).__name__}: {exc})") from None


def _geometry(model: RuntimeModel, stages: list[Stage]) -> list[dict[str, int]]:
    """Per stage: input/output sizes in channel-major layout (a linear is a 1x1 conv of a 1x1 image)."""
    c, h, w = model.input_shape
    out = []
    for st in stages:
        op = st.linop
        if isinstance(op, Linear):
            fan = op.in_features
            if c * h * w != fan:
                raise ConfigError(f"C export: linear layer expects {fan} inputs, gets {c * h * w}")
            g = dict(cin=fan, hin=1, win=1, cout=op.out_features, kh=1, kw=1, stride=1, pad=0, hout=1, wout=1)
        else:
            if st.flatten:
                raise ConfigError("C export: a convolution after a flatten has no input image")
            ho = (h + 2 * op.padding - op.kh) // op.stride + 1
            wo = (w + 2 * op.padding - op.kw) // op.stride + 1
            g = dict(cin=c, hin=h, win=w, cout=op.cout, kh=op.kh, kw=op.kw, stride=op.stride, pad=op.padding)
            g.update(hout=ho, wout=wo)
        g["pool"] = st.pool
        g["hp"], g["wp"] = g["hout"] // st.pool, g["wout"] // st.pool
        g["fan"] = g["cin"] * g["kh"] * g["kw"]
        c, h, w = g["cout"], g["hp"], g["wp"]
        out.append(g)
    return out


def _check_model(model: RuntimeModel, settings: Mapping[str, Any]) -> list[Stage]:
    try:
        stages = body_stages(model)
    except ValueError as exc:
        raise ConfigError(f"C export: {exc}; supported: conv4 and mlp bodies") from None
    if scope_parts(str(settings["scope"])) - {"head"}:
        raise ConfigError(
            f"C export: the C runtime adapts the head only, the artifact's scope is {settings['scope']!r}; "
            "re-export with --scope head"
        )
    head = model.layers[model.embedding_layers :]
    if len(head) > 1 or (head and not isinstance(head[0], Linear)):
        raise ConfigError("C export: the head must be one linear layer")
    return stages


def _weight_arrays(em: _Emitter, prefix: str, tensor: Any, fields: dict[str, Any]) -> int:
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


def _pixel_major(tensor: Any) -> Any:
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


def _lut(model: RuntimeModel) -> np.ndarray:
    """Per input channel, the normalised value of each pixel value 0..255, computed with the float32
    arithmetic of `fewbit.runtime.images.preprocess` (the C code quantizes it as the first layer does)."""
    pre = model.preprocessing
    channels = model.input_shape[0]
    mean = np.broadcast_to(np.asarray(pre.get("mean", 0.0), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(pre.get("std", 1.0), np.float32).reshape(-1), (channels,))
    pixels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return ((pixels[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)  # [C, 256]


def pixels_to_input(pixels: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """uint8 images `[N, C, H, W]` as the float32 input the runtime takes (scale to [0, 1], then
    (x - mean) / std), the arithmetic of `fewbit.runtime.images.preprocess`."""
    pixels = np.asarray(pixels)
    channels = pixels.shape[1]
    mean = np.broadcast_to(np.asarray(preprocessing.get("mean", 0.0), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(preprocessing.get("std", 1.0), np.float32).reshape(-1), (channels,))
    x = pixels.astype(np.float32) / np.float32(255.0)
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def input_to_pixels(x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """The uint8 images whose `pixels_to_input` is `x` (ValueError when `x` did not come from pixels)."""
    x = np.asarray(x, np.float32)
    channels = x.shape[1]
    mean = np.broadcast_to(np.asarray(preprocessing.get("mean", 0.0), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(preprocessing.get("std", 1.0), np.float32).reshape(-1), (channels,))
    pixels = np.rint((x * std[None, :, None, None] + mean[None, :, None, None]) * 255.0)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if not np.array_equal(pixels_to_input(pixels, preprocessing), x):
        raise ValueError("these images are not 8-bit pixels under the artifact's preprocessing")
    return pixels


def write_task_files(
    folder: str | os.PathLike[str],
    support_pixels: np.ndarray,
    support_labels: np.ndarray,
    query_pixels: np.ndarray,
) -> tuple[Path, Path]:
    """The example program's inputs: `support.bin` (label byte + pixels per image) and
    `query.bin` (pixels per image), uint8 channel-major."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(support_labels).reshape(-1)
    support = np.asarray(support_pixels, np.uint8).reshape(len(labels), -1)
    records = np.concatenate([labels.astype(np.uint8)[:, None], support], axis=1)
    (folder / "support.bin").write_bytes(records.tobytes())
    (folder / "query.bin").write_bytes(np.asarray(query_pixels, np.uint8).tobytes())
    return folder / "support.bin", folder / "query.bin"


def export_c(
    source: str | os.PathLike[str] | bytes,
    out_dir: str | os.PathLike[str],
    *,
    max_ways: int = 20,
    max_support: int = 100,
    target: CTarget | None = None,
    compile_check: bool = True,
) -> dict[str, Any]:
    """Write the C library of an artifact (a `.fewbit` path or its bytes) into `out_dir`.

    Returns the report (also written as `out_dir/fewbit_report.json`): `flash_bytes` (weights and
    code as compiled for this host with `cc -O2`, None without a compiler), `weight_bytes` (the
    const model arrays), `arena_bytes` (peak activations and adaptation state: the arena),
    `target` and `fits`, `integer_body`, `method`, `files`.

        report = export_c("model.fewbit", "model_c", max_ways=5, max_support=25)
        assert report["fits"]          # 256 KB RAM / 1 MB flash unless `target` says otherwise
    """
    target = target or CTarget()
    if not (isinstance(max_ways, int) and 2 <= max_ways <= 255):
        raise ConfigError("C export: max_ways must be in 2..255")
    if not (isinstance(max_support, int) and 2 <= max_support <= 65535):
        raise ConfigError("C export: max_support must be in 2..65535")
    artifact, model, where = _load(source)
    try:
        settings = settings_for(model)
    except ValueError as exc:
        raise ConfigError(f"C export: {exc}") from None
    stages = _check_model(model, settings)
    geo = _geometry(model, stages)
    integer = integer_body(stages)
    specs = {id(op): spec for op, spec in zip(model.layers, model.manifest["architecture"]["layers"])}
    em = _Emitter()
    structs, max_w = [], 0
    for i, (st, g) in enumerate(zip(stages, geo)):
        fields: dict[str, Any] = dict(g)
        weight = _pixel_major(artifact.tensors[specs[id(st.linop)]["weight"]])
        max_w = max(max_w, _weight_arrays(em, f"fb_s{i}", weight, fields))
        if integer:
            bound = accumulator_bound(st)
            if st.bn is not None and max_support * g["hout"] * g["wout"] * bound * bound >= 2**63:
                raise ConfigError(
                    f"C export: layer {i}'s statistics could overflow int64 with {max_support} support "
                    "images; lower max_support"
                )
        _stage_fields(em, model, stages, i, fields, integer)
        structs.append(fields)
    if integer and max_w > 32767:
        raise ConfigError("C export: integer weights beyond 16 bits")
    lut_name = em.array("fb_lut", "float", _lut(model))
    head = _head(em, model, artifact, settings, max_ways)
    layout = _layout(stages, structs, integer, model, max_ways, max_support, head)
    dim = model.embedding_dim
    defines = {
        "FEWBIT_INPUT_CHANNELS": model.input_shape[0],
        "FEWBIT_INPUT_HEIGHT": model.input_shape[1],
        "FEWBIT_INPUT_WIDTH": model.input_shape[2],
        "FEWBIT_INPUT_BYTES": "(FEWBIT_INPUT_CHANNELS * FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH)",
        "FEWBIT_EMBED_DIM": dim,
        "FEWBIT_MAX_WAYS": max_ways,
        "FEWBIT_MAX_SUPPORT": max_support,
        "FEWBIT_INTEGER_BODY": int(integer),
        "FEWBIT_EMBED_FRAC_BITS": fixedpoint.EMBED_FRAC_BITS,
        "FEWBIT_HEAD_FINETUNE": int(head is not None),
        "FEWBIT_ARENA_BYTES": f"{layout['total']}u",
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = _template("fewbit_model.h.in")
    ink = "ink is the high value" if model.preprocessing.get("invert", "auto") != "none" else "as photographed"
    for key, value in {
        "@PRODUCER@": f"fewbit {__version__}",
        "@SOURCE@": Path(where).name if where != "artifact bytes" else where,
        "@ARCH@": model.arch_name,
        "@ALGORITHM@": model.algorithm,
        "@INK@": ink,
        "@STEPS@": str(settings["steps"]),
        "@DEFINES@": "\n".join(f"#define {k} {v}" for k, v in defines.items()),
    }.items():
        header = header.replace(key, value)
    source_c = _model_c(em, structs, stages, lut_name, layout, head)
    files = {
        "fewbit_model.h": header,
        "fewbit_model.c": source_c,
        "example_main.c": _template("example_main.c"),
        "Makefile": _template("Makefile.in"),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    flash = _compiled_flash_bytes(out) if compile_check else None
    report: dict[str, Any] = {
        "out": str(out),
        "files": sorted([*files, "fewbit_report.json"]),
        "architecture": model.arch_name,
        "algorithm": model.algorithm,
        "method": "head" if head is not None else "prototypes",
        "integer_body": integer,
        "norm_stats": "support",
        "weight_bytes": em.weight_bytes,
        "flash_bytes": flash,
        "arena_bytes": layout["total"],
        "max_ways": max_ways,
        "max_support": max_support,
        "target": {"ram_bytes": target.ram_bytes, "flash_bytes": target.flash_bytes, "name": target.describe()},
    }
    report["fits"] = layout["total"] <= target.ram_bytes and (flash if flash is not None else em.weight_bytes) <= (
        target.flash_bytes
    )
    (out / "fewbit_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def report_text(report: Mapping[str, Any]) -> str:
    """The export report for people."""
    flash = report["flash_bytes"]
    flash_text = f"{flash:,} B flash (weights + code, host cc -O2)" if flash is not None else "flash: no compiler"
    verdict = "fits in" if report["fits"] else "does NOT fit in"
    body = "integer (int8 activations, fixed-point requantization)" if report["integer_body"] else "float32"
    return (
        f"wrote {report['out']}/: {', '.join(report['files'])}\n"
        f"{report['architecture']} {report['algorithm']}, {body} body, adapts by {report['method']}, "
        f"BatchNorm statistics from the support set\n"
        f"{report['weight_bytes']:,} B weights, {flash_text}, {report['arena_bytes']:,} B arena "
        f"(max {report['max_ways']} ways, {report['max_support']} support images)\n"
        f"{verdict} {report['target']['name']}\n"
        f"build: make -C {report['out']}"
    )


def _stage_fields(
    em: _Emitter, model: RuntimeModel, stages: list[Stage], i: int, fields: dict[str, Any], integer: bool
) -> None:
    st = stages[i]
    op = st.linop
    params = model.params
    quant: InputQuant | None = op.input_quant
    fields.update(relu=int(st.relu), has_iq=int(quant is not None), iq_dynamic=int(bool(quant and quant.dynamic)))
    fields["chw_out"] = int(i + 1 < len(stages) and isinstance(stages[i + 1].linop, Linear))
    fields.update(
        iq_scale=_float_literal(float(quant.scale)) if quant is not None and not quant.dynamic else "0.0f",
        iq_zero=quant.zero_point if quant is not None else 0,
        iq_qmin=quant.qmin if quant is not None else 0,
        iq_qmax=quant.qmax if quant is not None else 0,
    )
    fields["gamma"] = fields["beta"] = fields["bias"] = "0"
    fields["eps"] = "0.0"
    if st.bn is not None:
        fields["gamma"] = em.array(f"fb_s{i}_gamma", "float", params[st.bn.weight_name])
        fields["beta"] = em.array(f"fb_s{i}_beta", "float", params[st.bn.bias_name])
        fields["eps"] = _double_literal(float(st.bn.eps))
    if op.bias_name:
        fields["bias"] = em.array(f"fb_s{i}_bias", "float", params[op.bias_name])
    w_bytes = 2 if integer else 4
    group = min(fields["cout"], WEIGHT_SCRATCH_BYTES // (fields["fan"] * w_bytes))
    if group < fields["cout"]:  # whole blocks of four channels: the kernels compute four at a time
        group -= group % 4
    fields["group"] = max(1, group)


_STRUCT_FIELDS = (  # the order of the C struct fb_stage
    *("cin", "hin", "win", "cout", "kh", "kw", "stride", "pad", "hout", "wout", "pool", "hp", "wp", "fan", "group"),
    *("relu", "wenc", "bits", "mask_format", "index_bits", "rice_k", "rice_unary_offset", "code_min", "code_step"),
    *("numel", "kept", "codes", "mask", "zp", "zp_n", "scale", "scale_n", "book", "fvals", "has_iq", "iq_scale"),
    *("iq_zero", "iq_qmin", "iq_qmax", "iq_dynamic", "gamma", "beta", "bias", "eps", "chw_out"),
)


def _head(
    em: _Emitter, model: RuntimeModel, artifact: Artifact, settings: Mapping[str, Any], max_ways: int
) -> dict[str, Any] | None:
    """The head fine-tuning configuration (None for ProtoNet-style adaptation)."""
    if settings["method"] != "finetune":
        return None
    init = {"own": 0, "zeros": 1, "prototypes": 2}[settings["head_init"]]
    cfg: dict[str, Any] = {
        "FB_HEAD_STEPS": int(settings["steps"]),
        "FB_HEAD_LR": _float_literal(float(np.float32(settings["lr"]))),
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
        assert isinstance(linear, Linear)
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
                FB_HEAD_IQ_SCALE=_float_literal(float(q.scale)) if not q.dynamic else "0.0f",
                FB_HEAD_IQ_ZERO=q.zero_point,
                FB_HEAD_IQ_QMIN=q.qmin,
                FB_HEAD_IQ_QMAX=q.qmax,
            )
        rule = linear.weight_rule
        if rule is not None and isinstance(stored, PackedTensor):
            cfg.update(_head_rule(em, rule, stored))
    return cfg


def _head_rule(em: _Emitter, rule: Mapping[str, Any], stored: PackedTensor) -> dict[str, Any]:
    from fewbit.runtime.requant import qrange

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


def _layout(
    stages: list[Stage],
    geo: list[dict[str, int]],
    integer: bool,
    model: RuntimeModel,
    max_ways: int,
    max_support: int,
    head: dict[str, Any] | None,
) -> dict[str, Any]:
    """Arena offsets (8-byte aligned) and the total: activations, unpacked weights, statistics, state."""
    act = 1 if integer else 4
    w_size = 2 if integer else 4
    first = int(np.prod(model.input_shape))
    act_elems = max([first] + [g["cout"] * g["hp"] * g["wp"] for g in geo[:-1]])
    dim = model.embedding_dim
    parts: list[tuple[str, int]] = [
        ("ACT0", act * act_elems),
        ("ACT1", act * act_elems),
        ("WEIGHTS", max(w_size * g["group"] * g["fan"] for g in geo)),
        ("PATCH", 2 * (2 if integer else 4) * max(g["fan"] for g in geo)),  # two pixels' im2col rows
        ("BEST", 12 * max(g["group"] for g in geo)),  # pooled maxima and two pixels' accumulators
        ("SUMS", 24 * max(g["cout"] for g in geo)),  # sums, sums of squares, extremes per channel
        ("LIVE", 20 * len(geo)),  # fb_live per stage
        ("CODES", 256 * model.input_shape[0] if integer else 0),
        ("EMBED", 4 * dim),
        ("PROTOS", 8 * max_ways * dim),
        ("COUNTS", 4 * max_ways),
    ]
    frozen_each = [24 * g["cout"] if integer else 8 * g["cout"] for g in geo]
    for i, size in enumerate(frozen_each):
        parts.append((f"FROZEN{i}", size))
    if head is not None:
        wd = max_ways * dim
        parts += [
            ("HEAD_W", 4 * wd),
            ("HEAD_WQ", 4 * wd),
            ("HEAD_GW", 4 * wd),
            ("HEAD_B", 4 * max_ways),
            ("HEAD_GB", 4 * max_ways),
            ("HEAD_X", 4 * dim),
            ("HEAD_XS", 4 * max_support * dim),
            ("HEAD_LOGITS", 4 * max_ways),
            ("HEAD_IQ", 8),
        ]
    offsets, total = {}, 0
    for name, size in parts:
        offsets[name] = total
        total += (size + 7) // 8 * 8
    return {"offsets": offsets, "total": total, "stages": len(stages)}


def _model_c(
    em: _Emitter,
    structs: list[dict[str, Any]],
    stages: list[Stage],
    lut_name: str,
    layout: Mapping[str, Any],
    head: dict[str, Any] | None,
) -> str:
    off = layout["offsets"]
    needs_support = any(
        st.bn is not None or (st.linop.input_quant is not None and st.linop.input_quant.dynamic) for st in stages
    )
    lines = [
        f"/* fewbit_model.c: generated by fewbit {__version__}; the model's packed weights (const, in flash)",
        " * and the fewbit C runtime. Do not edit: re-export instead. */",
        '#include "fewbit_model.h"',
        "",
        "#include <math.h>",
        "",
        "#define FB_MASK_NONE 0",
        "#define FB_MASK_BITMAP 1",
        "#define FB_MASK_INDICES 2",
        "#define FB_MASK_RICE 3",
        "#define FB_ENC_AFFINE 0",
        "#define FB_ENC_CODEBOOK 1",
        "#define FB_ENC_FLOAT 2",
        "#define FB_MODE_PROTOTYPES 1",
        "#define FB_MODE_HEAD 2",
        f"#define FB_NUM_STAGES {len(stages)}",
        f"#define FB_NEEDS_SUPPORT {int(needs_support)}",
        f"#define FB_EMBED_ONE {float(2 ** fixedpoint.EMBED_FRAC_BITS)!r}",
        f"#define FB_TRANSPOSE_BELOW {TRANSPOSE_BELOW}",
        f"#define FB_INPUT_CHW {int(isinstance(stages[0].linop, Linear))}",
    ]
    for name in ("ACT0", "ACT1", "WEIGHTS", "PATCH", "BEST", "SUMS", "LIVE", "CODES", "EMBED", "PROTOS", "COUNTS"):
        lines.append(f"#define FB_OFF_{name} {off[name]}u")
    if head is not None:
        for name in (n for n in off if n.startswith("HEAD_")):
            lines.append(f"#define FB_OFF_{name} {off[name]}u")
        lines += ["#define FB_INIT_OWN 0", "#define FB_INIT_ZEROS 1", "#define FB_INIT_PROTOTYPES 2"]
        lines += ["#define FB_RULE_NONE 0", "#define FB_RULE_FIXED 1", "#define FB_RULE_MINMAX 2"]
        lines += ["#define FB_RULE_CODEBOOK 3"]
        lines += [f"#define {k} {v}" for k, v in head.items()]
    lines += [
        "",
        "typedef struct {",
        "    int cin, hin, win, cout, kh, kw, stride, pad, hout, wout, pool, hp, wp, fan, group, relu;",
        "    int wenc, bits, mask_format, index_bits, rice_k;",
        "    uint32_t rice_unary_offset;",
        "    int32_t code_min, code_step;",
        "    uint32_t numel, kept;",
        "    const uint8_t *codes, *mask;",
        "    const int32_t *zp;",
        "    int zp_n;",
        "    const float *scale;",
        "    int scale_n;",
        "    const float *book, *fvals;",
        "    int has_iq;",
        "    float iq_scale;",
        "    int iq_zero, iq_qmin, iq_qmax;",
        "    int iq_dynamic; /* the input range comes from the support set */",
        "    const float *gamma, *beta, *bias;",
        "    double eps;",
        "    int chw_out; /* write the output in (C, H, W) order: a linear layer reads it */",
        "} fb_stage;",
        "",
    ]
    lines += em.lines
    lines.append("")
    lines.append("static const fb_stage fb_stages[FB_NUM_STAGES] = {")
    for s in structs:
        values = []
        values = [str(s[name]) for name in _STRUCT_FIELDS]
        lines.append("    {" + ", ".join(values) + "},")
    lines.append("};")
    frozen = ", ".join(f"{off[f'FROZEN{i}']}u" for i in range(len(stages)))
    lines.append(f"static const size_t fb_frozen_offset[FB_NUM_STAGES] = {{{frozen}}};")
    lines.append(f"#define fb_lut {lut_name}")
    if head is not None and head.get("FB_HAS_OWN_HEAD"):
        lines.append("static int fb_head_mask_of(int i) { return (fb_head_mask[i >> 3] >> (i & 7)) & 1; }")
    lines.append("")
    text = "\n".join(lines) + "\n" + _template("kernels.c")
    if head is not None:
        text += _template("head.c")
    text += _template("api.c")
    return text


def _template(name: str) -> str:
    return resources.files("fewbit.deploy").joinpath("c_runtime", name).read_text()


def _compiled_flash_bytes(folder: Path) -> int | None:
    """text + data (+ rodata) of `fewbit_model.o` compiled for this host with `cc -O2`, or None."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "fewbit_model.o"
        done = subprocess.run(
            [cc, "-std=c99", "-O2", "-ffp-contract=off", "-c", "-o", str(obj), str(folder / "fewbit_model.c")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise ConfigError(f"C export: the generated code does not compile: {done.stderr.strip()[:300]}")
        return elf_alloc_bytes(obj.read_bytes())


def elf_alloc_bytes(data: bytes) -> int:
    """Bytes an ELF object puts in memory that a device keeps in flash: allocated sections that
    hold contents (text, rodata, data; not bss). ValueError when `data` is not ELF."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    if is64:
        shoff = struct.unpack_from(end + "Q", data, 0x28)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        fmt, flags_at, size_at = end + "IIQQQQIIQQ", 2, 5
    else:
        shoff = struct.unpack_from(end + "I", data, 0x20)[0]
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        fmt, flags_at, size_at = end + "IIIIIIIIII", 2, 5
    total = 0
    for i in range(shnum):
        fields = struct.unpack_from(fmt, data, shoff + i * shentsize)
        sh_type, sh_flags, sh_size = fields[1], fields[flags_at], fields[size_at]
        if sh_flags & 0x2 and sh_type != 8:  # SHF_ALLOC, not SHT_NOBITS
            total += sh_size
    return total
