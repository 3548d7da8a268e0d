"""`export_c`: an artifact to a folder of C (header, model + runtime source, example, Makefile) and
its report; what the C runtime cannot reproduce is refused before anything is written."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fewbit import __version__
from fewbit._io import atomic_write_bytes, read_regular_file
from fewbit.artifact.format import Artifact, decode_artifact, read_artifact
from fewbit.artifact.tensor import PackedTensor
from fewbit.deploy.c_export import mcu as mcu_image
from fewbit.deploy.c_export.arrays import Emitter, head_config, pixel_major, weight_arrays
from fewbit.deploy.c_export.elf import compiled_flash_bytes
from fewbit.deploy.c_export.inputs import c_input
from fewbit.deploy.c_export.layout import SPARSE_LANES_VECTOR, arena_layout
from fewbit.deploy.c_export.literals import c_token, comment_text, double_literal, float_literal
from fewbit.errors import ConfigError, FewbitFormatError
from fewbit.runtime import fixedpoint
from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.ops import InputQuant, LinearOp
from fewbit.runtime.settings import scope_parts, settings_for
from fewbit.runtime.support_stats import Stage, accumulator_bound, body_stages, integer_body

REPORT_NAME = "fewbit_report.json"  # also what marks a folder as one the C export wrote

DEFAULT_RAM = 256 * 1024

DEFAULT_FLASH = 1024 * 1024

WEIGHT_SCRATCH_BYTES = 72 * 1024  # unpacked weights of one layer (or of a group of its channels)

SCHEDULE_CHUNK = 256  # kept weights of one value summed at a time (kernels.c, FB_CHUNK)
TRANSPOSE_BELOW = 32  # a layer with fewer inputs per output computes across output channels
SUPPORT_CACHE_BYTES = 32 * 1024  # support-set activations kept while statistics are frozen


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


def stage_geometry(model: RuntimeModel, stages: list[Stage]) -> list[dict[str, int]]:
    """Per stage: input/output sizes in channel-major layout (a linear is a 1x1 conv of a 1x1 image);
    padding and pooling along height and width apart (a series' `1 x 3` kernels pad `0 x 1`)."""
    c, h, w = model.input_shape
    out = []
    for st in stages:
        op = st.linop
        if isinstance(op, LinearOp):
            fan = op.in_features
            if c * h * w != fan:
                raise ConfigError(f"C export: linear layer expects {fan} inputs, gets {c * h * w}")
            g = dict(cin=fan, hin=1, win=1, cout=op.out_features, kh=1, kw=1, stride=1, pad_h=0, pad_w=0)
            g.update(hout=1, wout=1)
        else:
            if st.flatten:
                raise ConfigError("C export: a convolution after a flatten has no input image")
            ho = (h + 2 * op.pad_h - op.kh) // op.stride + 1
            wo = (w + 2 * op.pad_w - op.kw) // op.stride + 1
            g = dict(cin=c, hin=h, win=w, cout=op.cout, kh=op.kh, kw=op.kw, stride=op.stride, pad_h=op.pad_h)
            g.update(pad_w=op.pad_w, hout=ho, wout=wo)
        g["pool_h"], g["pool_w"] = st.pool
        g["hp"], g["wp"] = g["hout"] // g["pool_h"], g["wout"] // g["pool_w"]
        g["fan"] = g["cin"] * g["kh"] * g["kw"]
        c, h, w = g["cout"], g["hp"], g["wp"]
        out.append(g)
    return out


def _check_model(model: RuntimeModel, settings: Mapping[str, Any]) -> list[Stage]:
    if len(model.input_shape) != 3:
        raise ConfigError(
            f"C export: the C runtime takes images (uint8 pixels, channels x height x width) or series (float32, "
            f"channels x 1 x length); this model takes "
            f"{model.input_shape[0] if model.input_shape else 0} table features: use the numpy runtime "
            "(fewbit.runtime) or --format onnx"
        )
    try:
        stages = body_stages(model)
    except ValueError as exc:
        raise ConfigError(f"C export: {exc}; supported: conv4, conv1d and mlp bodies") from None
    if scope_parts(str(settings["scope"])) - {"head"}:
        raise ConfigError(
            f"C export: the C runtime adapts the head only, the artifact's scope is {settings['scope']!r}; "
            "re-export with --scope head"
        )
    if (settings["center"], settings["normalize"]) != ("none", False):
        raise ConfigError("C export: the C runtime compares plain class means (Euclidean distance or cosine "
                          "similarity); this artifact centres or normalises its embeddings first (SimpleShot): "
                          "re-export the run with --algorithm metabaseline or protonet")
    if settings.get("rates") or settings.get("step_rates"):
        raise ConfigError("C export: the C runtime adapts with one learning rate; this artifact has learned "
                          "per-parameter or per-step rates (Meta-SGD, LSLR), which it would not follow")
    head = model.layers[model.embedding_layers :]
    if len(head) > 1 or (head and not isinstance(head[0], LinearOp)):
        raise ConfigError("C export: the head must be one linear layer")
    return stages


def export_c(
    source: str | os.PathLike[str] | bytes,
    out_dir: str | os.PathLike[str],
    *,
    max_ways: int = 20,
    max_support: int = 100,
    target: CTarget | None = None,
    compile_check: bool = True,
    force: bool = False,
    task: tuple[Any, Any, Any] | None = None,
    mcu: bool = False,
) -> dict[str, Any]:
    """Write the C library of an artifact (a `.fewbit` path or its bytes) into `out_dir`.

    Returns the report (also written as `out_dir/fewbit_report.json`): `flash_bytes` (weights and
    code as compiled for this host with `cc -O2`, None without a compiler), `weight_bytes` (the
    const model arrays), `arena_bytes` (peak activations and adaptation state: the arena),
    `target` and `fits`, `integer_body`, `method`, `files`. `out_dir` must be new, empty, or a
    folder this export wrote before, unless `force` (ConfigError, before any work).

    The folder also builds a bare-metal image for a Cortex-M4F (`make -C out_dir qemu`, see
    `fewbit.deploy.c_export.mcu`) that adapts to `task` (support inputs, their labels, query inputs,
    as the C runtime takes them: uint8 images, or float32 series for a series model, see
    `fewbit.deploy.c_export.inputs`; by default a task `mcu.default_task` draws). With `mcu`, the
    image is built and run on QEMU here and the report gains its measured `mcu_*` figures
    (ConfigError naming the Debian packages when the cross compiler or QEMU is missing).

        report = export_c("model.fewbit", "model_c", max_ways=5, max_support=25)
        assert report["fits"]          # 256 KB RAM / 1 MB flash unless `target` says otherwise
    """
    target = target or CTarget()
    if mcu:
        mcu_image.require_tools()
    _check_out_dir(Path(out_dir), force)
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
    form = c_input(model.preprocessing)  # how inputs enter: uint8 pixels, or a series' float32 values
    geo = stage_geometry(model, stages)
    integer = integer_body(stages)
    specs = {id(op): spec for op, spec in zip(model.layers, model.manifest["architecture"]["layers"])}
    em = Emitter()
    structs, max_w = [], 0
    for i, (st, g) in enumerate(zip(stages, geo)):
        fields: dict[str, Any] = dict(g)
        weight = pixel_major(artifact.tensors[specs[id(st.linop)]["weight"]])
        max_w = max(max_w, weight_arrays(em, f"fb_s{i}", weight, fields))
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
    byte_products = integer and max_w <= 127
    for st in structs:  # byte products: weights of one byte, and the group's rows in the scratch
        st["group"] = _group(st["cout"], st["fan"], 1 if byte_products else 2 if integer else 4)
    for i, st in enumerate(stages):  # pruned layers run from a schedule of their kept weights
        weight = artifact.tensors[specs[id(st.linop)]["weight"]]
        structs[i]["sched_bytes"] = schedule_bytes(pixel_major(weight)) if byte_products and sparse_rows(weight) else 0
        structs[i]["sparse"] = int(structs[i]["sched_bytes"] > 0)
    table = form.lookup_table(model)
    lut_name = em.array("fb_lut", "float", table) if table is not None else None
    head = head_config(em, model, artifact, settings, max_ways)
    cache = SUPPORT_CACHE_BYTES if integer else 0
    code_table = integer and table is not None
    layout = arena_layout(stages, structs, integer, byte_products, model, max_ways, max_support, head, cache,
                          code_table)
    # a core with vectors runs sparse layers 16 pixels at once: its last regions are larger
    wide = arena_layout(stages, structs, integer, byte_products, model, max_ways, max_support, head, cache,
                        code_table, lanes=SPARSE_LANES_VECTOR)
    layout["total_vector"] = wide["total"]
    layout["offsets_vector"] = wide["offsets"]
    dim = model.embedding_dim
    defines = {
        "FEWBIT_INPUT_CHANNELS": model.input_shape[0],
        "FEWBIT_INPUT_HEIGHT": model.input_shape[1],
        "FEWBIT_INPUT_WIDTH": model.input_shape[2],
        "FEWBIT_INPUT_FLOAT": int(form.floats),  # float32 values (a series), else uint8 pixels
        "FEWBIT_INPUT_VALUES": "(FEWBIT_INPUT_CHANNELS * FEWBIT_INPUT_HEIGHT * FEWBIT_INPUT_WIDTH)",
        "FEWBIT_INPUT_VALUE_BYTES": int(form.dtype.itemsize),
        "FEWBIT_INPUT_BYTES": "(FEWBIT_INPUT_VALUES * FEWBIT_INPUT_VALUE_BYTES)",
        "FEWBIT_EMBED_DIM": dim,
        "FEWBIT_MAX_WAYS": max_ways,
        "FEWBIT_MAX_SUPPORT": max_support,
        "FEWBIT_INTEGER_BODY": int(integer),
        "FEWBIT_EMBED_FRAC_BITS": fixedpoint.EMBED_FRAC_BITS,
        "FEWBIT_HEAD_FINETUNE": int(head is not None),
        "FEWBIT_PROTO_COSINE": int(settings["metric"] == "cosine"),  # else minus squared distances
        "FEWBIT_COSINE_SCALE": double_literal(float(settings.get("scale", 1.0))),
        "FEWBIT_ARENA_BYTES": f"{int(layout['total'])}u",
    }
    if layout["total_vector"] != layout["total"]:  # a core with vectors runs sparse layers 16 pixels at once
        defines["FEWBIT_ARENA_BYTES"] = (int(layout["total_vector"]), int(layout["total"]))
    out = Path(out_dir)
    _check_out_dir(out, force)
    header = _template("fewbit_model.h.in")
    for key, value in {  # read text reaches the C only through comment_text, inside a comment
        "@PRODUCER@": comment_text(f"fewbit {__version__}"),
        "@SOURCE@": comment_text(Path(where).name if where != "artifact bytes" else where),
        "@ARCH@": comment_text(model.arch_name),
        "@ALGORITHM@": comment_text(model.algorithm),
        "@INPUT_DOC@": form.header_doc(model),
        "@STEPS@": c_token(int(settings["steps"]), "adaptation.steps"),
        "@DEFINES@": "\n".join(f"#define {k} {_define_value(k, v)}" for k, v in defines.items()),
    }.items():
        header = header.replace(key, value)
    source_c = _model_c(em, structs, stages, lut_name, layout, head, byte_products, integer)
    if task is None:
        task = mcu_image.default_task(model, ways=min(5, max_ways), shots=1, queries=2)
    files: dict[str, str | bytes] = {
        "fewbit_model.h": header,
        "fewbit_model.c": source_c,
        "example_main.c": _template("example_main.c"),
        "Makefile": _template("Makefile.in").replace("@STACK_BYTES@", str(mcu_image.STACK_BYTES)),
        **mcu_image.image_files(target, task, model.input_shape, max_ways, max_support, form),
    }
    # Written and compiled beside `out` first, then moved in file by file: no half-written file.
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        for name, text in files.items():
            if isinstance(text, bytes):
                (Path(tmp) / name).write_bytes(text)
            else:
                (Path(tmp) / name).write_text(text)
        flash = compiled_flash_bytes(Path(tmp)) if compile_check else None
        for name in files:
            os.replace(Path(tmp) / name, out / name)
    report: dict[str, Any] = {
        "out": str(out),
        "files": sorted([*files, REPORT_NAME]),
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
    if mcu:
        report.update(mcu_image.measure(out, model, task, target))
    # the shipped report names no path of the building machine: `out` is only in what is returned
    shipped = {"producer": f"fewbit {__version__}", **{k: v for k, v in report.items() if k != "out"}}
    atomic_write_bytes(out / REPORT_NAME, (json.dumps(shipped, indent=2) + "\n").encode())
    return report


_EXPRESSIONS = ("FEWBIT_INPUT_VALUES", "FEWBIT_INPUT_BYTES")  # defines that are expressions of fewbit's own


def _define_value(name: str, value: Any) -> str:
    if isinstance(value, tuple):  # (with vectors, without)
        return f"(FEWBIT_VECTOR_LANES ? {c_token(value[0], name)}u : {c_token(value[1], name)}u)"
    if name in _EXPRESSIONS:
        return str(value)
    if isinstance(value, str) and value.endswith("u"):
        return c_token(int(value[:-1]), name) + "u"
    return c_token(value, name)


def _check_out_dir(out: Path, force: bool) -> None:
    """Refuse to write the C library into anything but a new or empty folder, or one a C export
    wrote before (it holds its report), unless `force`: the user's own files there stay theirs."""
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a folder; the C export writes a folder")
    if not out.is_dir() or force:
        return
    try:
        present = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise ConfigError(f"--out: {out} cannot be listed ({exc.strerror})") from None
    if not present or _written_by_export(out / REPORT_NAME):
        return
    shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
    raise ConfigError(
        f"--out: {out} holds other files ({shown}) and no C export of fewbit's; write into a new or empty "
        "folder, or add --force to replace fewbit's files there"
    )


def _written_by_export(report: Path) -> bool:
    """Whether `report` is a C export's report (a regular file, JSON, with the export's fields)."""
    try:
        data = json.loads(read_regular_file(report, 1 << 20, "report"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("files"), list) and "weight_bytes" in data


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
        f"build: make -C {report['out']}; on an emulated Cortex-M4: make -C {report['out']} qemu"
        + (f"\n{mcu_text(report)}" if "mcu_flash_bytes" in report else "")
    )


def _stage_fields(
    em: Emitter, model: RuntimeModel, stages: list[Stage], i: int, fields: dict[str, Any], integer: bool
) -> None:
    st = stages[i]
    op = st.linop
    params = model.params
    quant: InputQuant | None = op.input_quant
    fields.update(relu=int(st.relu), has_iq=int(quant is not None), iq_dynamic=int(bool(quant and quant.dynamic)))
    fields["chw_out"] = int(i + 1 < len(stages) and isinstance(stages[i + 1].linop, LinearOp))
    fields.update(
        iq_scale=float_literal(float(quant.scale)) if quant is not None and not quant.dynamic else "0.0f",
        iq_zero=quant.zero_point if quant is not None else 0,
        iq_qmin=quant.qmin if quant is not None else 0,
        iq_qmax=quant.qmax if quant is not None else 0,
    )
    fields["gamma"] = fields["beta"] = fields["bias"] = "0"
    fields["eps"] = "0.0"
    if st.bn is not None:
        fields["gamma"] = em.array(f"fb_s{i}_gamma", "float", params[st.bn.weight_name])
        fields["beta"] = em.array(f"fb_s{i}_beta", "float", params[st.bn.bias_name])
        fields["eps"] = double_literal(float(st.bn.eps))
    if op.bias_name:
        fields["bias"] = em.array(f"fb_s{i}_bias", "float", params[op.bias_name])


def sparse_rows(weight: Any) -> bool:
    """Whether a layer's weight runs from a schedule of its kept weights (kernels.c, "sparse rows"):
    integer codes of at most 8 bits with a mask that keeps at most half of them."""
    return (
        isinstance(weight, PackedTensor)
        and weight.encoding == "affine"
        and weight.mask_format is not None
        and weight.bits <= 8
        and 2 * weight.kept <= weight.numel
        and 2 * SPARSE_LANES_VECTOR * int(np.prod(weight.shape[1:])) <= 65535  # positions as uint16 byte offsets
    )


def schedule_bytes(weight: PackedTensor) -> int:
    """Arena bytes of a sparse layer's schedule, as fb_schedule_build lays it out: per output channel
    an int32 weight sum, then uint16s: the chunk count, and per chunk its value, its length and its
    positions (chunks of at most SCHEDULE_CHUNK kept weights of one nonzero value)."""
    rows = weight.shape[0]
    raw = (weight.stored_codes() - weight.code_min) // weight.code_step  # the codes as stored
    values = weight.integer_weights().reshape(rows, -1)[weight.keep_mask().reshape(rows, -1)]
    row_of = np.repeat(np.arange(rows), weight.keep_mask().reshape(rows, -1).sum(1))
    nonzero = values != 0
    units = rows + int(nonzero.sum())
    pairs = row_of[nonzero] * (1 << weight.bits) + raw[nonzero]
    if pairs.size:
        units += 2 * int(np.sum(-(-np.bincount(pairs) // SCHEDULE_CHUNK)))
    return 4 * rows + 2 * units


def _group(cout: int, fan: int, weight_bytes: int) -> int:
    """Output channels unpacked at a time: all that fit the scratch, else whole blocks of four (the
    kernels compute four channels at a time)."""
    group = min(cout, WEIGHT_SCRATCH_BYTES // (fan * weight_bytes))
    if group < cout:
        group -= group % 4
    return max(1, group)


_STRUCT_FIELDS = (  # the order of the C struct fb_stage
    *("cin", "hin", "win", "cout", "kh", "kw", "stride", "pad_h", "pad_w", "hout", "wout", "pool_h", "pool_w"),
    *("hp", "wp", "fan", "group"),
    *("relu", "wenc", "bits", "mask_format", "index_bits", "rice_k", "rice_unary_offset", "code_min", "code_step"),
    *("numel", "kept", "codes", "mask", "zp", "zp_n", "scale", "scale_n", "book", "fvals", "has_iq", "iq_scale"),
    *("iq_zero", "iq_qmin", "iq_qmax", "iq_dynamic", "gamma", "beta", "bias", "eps", "chw_out", "sparse"),
)


def _model_c(
    em: Emitter,
    structs: list[dict[str, Any]],
    stages: list[Stage],
    lut_name: str | None,
    layout: Mapping[str, Any],
    head: dict[str, Any] | None,
    byte_products: bool,
    integer: bool,
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
        "#include <string.h>",
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
        f"#define FB_EMBED_ONE {float(2**fixedpoint.EMBED_FRAC_BITS)!r}",
        f"#define FB_TRANSPOSE_BELOW {TRANSPOSE_BELOW}",
        f"#define FB_BYTE_PRODUCTS {int(byte_products)}",
        f"#define FB_CACHE_BYTES {layout['cache_bytes']}u",
        f"#define FB_INPUT_CHW {int(isinstance(stages[0].linop, LinearOp))}",
    ]
    for name in (
        "ACT0",
        "ACT1",
        "WEIGHTS",
        "PATCH",
        "BEST",
        "SUMS",
        "LIVE",
        "CODES",
        "CACHE",
        "EMBED",
        "PROTOS",
        "COUNTS",
        "SCHED_TMP",
    ):
        wide = layout["offsets_vector"][name]
        lines.append(f"#define FB_OFF_{name} " + (f"{off[name]}u" if wide == off[name] else
                                                   f"(FEWBIT_VECTOR_LANES ? {wide}u : {off[name]}u)"))
    if head is not None:
        for name in (n for n in off if n.startswith("HEAD_")):
            lines.append(f"#define FB_OFF_{name} {off[name]}u")
        lines += ["#define FB_INIT_OWN 0", "#define FB_INIT_ZEROS 1", "#define FB_INIT_PROTOTYPES 2"]
        lines += ["#define FB_RULE_NONE 0", "#define FB_RULE_FIXED 1", "#define FB_RULE_MINMAX 2"]
        lines += ["#define FB_RULE_CODEBOOK 3"]
        lines += [f"#define {k} {c_token(v, k)}" for k, v in head.items()]
    lines += [
        "",
        "typedef struct {",
        "    int cin, hin, win, cout, kh, kw, stride, pad_h, pad_w, hout, wout, pool_h, pool_w, hp, wp, fan, group;",
        "    int relu;",
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
        "    int sparse; /* runs from the schedule of its kept weights fewbit_init builds */",
        "} fb_stage;",
        "",
    ]
    lines += em.lines
    lines.append("")
    lines.append("static const fb_stage fb_stages[FB_NUM_STAGES] = {")
    for s in structs:
        values = [c_token(s[name], f"stage field {name}") for name in _STRUCT_FIELDS]
        lines.append("    {" + ", ".join(values) + "},")
    lines.append("};")
    frozen = ", ".join(f"{off[f'FROZEN{i}']}u" for i in range(len(stages)))
    lines.append(f"static const size_t fb_frozen_offset[FB_NUM_STAGES] = {{{frozen}}};")
    sched = ", ".join(f"{off.get(f'SCHED{i}', 0)}u" for i in range(len(stages)))
    if integer:
        lines.append(f"static const size_t fb_sched_offset[FB_NUM_STAGES] = {{{sched}}};")
    if lut_name is not None:
        lines.append(f"#define fb_lut {lut_name}")
    if head is not None and head.get("FB_HAS_OWN_HEAD"):
        lines.append("static int fb_head_mask_of(int i) { return (fb_head_mask[i >> 3] >> (i & 7)) & 1; }")
    lines.append("")
    text = "\n".join(lines) + "\n" + _template("kernels.c")
    if head is not None:
        text += _template("head.c")
    text += _template("api.c")
    return text


def mcu_text(report: Mapping[str, Any]) -> str:
    """The figures measured on the emulated part, for people."""
    return mcu_image.figures_text(report)


def _template(name: str) -> str:
    return resources.files("fewbit.deploy.c_export").joinpath("templates", name).read_text()
