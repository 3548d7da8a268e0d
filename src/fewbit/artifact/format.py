"""The `.fewbit` artifact: one file, read without pickle and without torch.

Layout (all integers little-endian)::

    magic      8 bytes   b"FEWBIT\\r\\n"  (the CR LF catches text-mode copies, as in PNG)
    version    uint16    FORMAT_VERSION
    flags      uint16    bit 0: the manifest is deflate-compressed (zlib); other bits 0
    length     uint32    bytes of the manifest as stored
    crc32      uint32    CRC-32 of the manifest bytes as stored
    manifest   JSON, UTF-8 (deflated: a 3 KB Conv-4 manifest stores in under 1 KB): format version,
               architecture (a layer list), per-tensor encoding,
               preprocessing, algorithm, adaptation scope, payload length and sha256
    payload    the packed arrays the manifest's `tensors` table points into

A tensor is stored either as float32 (`"enc": "f32"`; only its non-zeros and a mask when that is
smaller) or quantized (`"enc": "quant"`): unsigned codes `(q - code_min) / code_step`
bit-packed at `bits` bits (only the kept positions when the tensor is sparse), float32 scales and
zero points (uint8 for grids of <= 8 bits; omitted when all zero) per tensor or per channel along
`axis`, a keep-mask as a bitmap, an index list or Rice-coded gaps (whichever is smallest;
`fewbit.artifact.packing`), and an optional float32
codebook (value = codebook[q]). A quantized entry holds exactly the parts of a
`fewbit.artifact.PackedTensor`, written as they are and read back into one.

Reading trusts nothing: sizes are checked against the file before anything is allocated, the
manifest against its CRC, the payload against its sha256, and every tensor against its shape.
Any failure is a FewbitFormatError with one line that says what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fewbit.artifact.packing import MASK_FORMATS, decode_mask, encode_mask, packed_nbytes, unpack_bits
from fewbit.artifact.tensor import PackedTensor, zero_point_bytes
from fewbit.errors import FewbitFormatError

MAGIC = b"FEWBIT\r\n"
FORMAT_VERSION = 2
# Version 2 added Rice-coded masks; a version 1 file (bitmaps and index lists only) still reads.
READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct("<8sHHII")
HEADER_BYTES = _HEADER.size
FLAG_DEFLATE = 1
MAX_MANIFEST_BYTES = 4 << 20  # stored and inflated alike
MAX_FILE_BYTES = 1 << 30
MAX_TENSOR_ELEMENTS = 1 << 24  # a claimed shape larger than this is rejected before allocation
MAX_TOTAL_ELEMENTS = 1 << 25


Tensor = np.ndarray | PackedTensor


@dataclasses.dataclass(frozen=True, eq=False)
class Artifact:
    """A loaded artifact: its manifest and its tensors by name; `nbytes` is the file's size."""

    manifest: dict[str, Any]
    tensors: dict[str, Tensor]
    nbytes: int


# ----------------------------------------------------------------------------------------- writing


def encode_artifact(manifest: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> bytes:
    """The bytes of an artifact holding `manifest` (without `tensors`/`payload`) and `tensors`."""
    payload = bytearray()
    table: dict[str, Any] = {}

    def put(data: bytes) -> list[int]:
        ref = [len(payload), len(data)]
        payload.extend(data)
        return ref

    for name, tensor in tensors.items():
        if isinstance(tensor, PackedTensor) and tensor.encoding != "float":
            table[name] = _encode_quant(tensor, put)
        else:  # float32, pruned or not, is stored by its non-zeros (below)
            dense = tensor.dequantize() if isinstance(tensor, PackedTensor) else tensor
            table[name] = _encode_float(np.asarray(dense, dtype=np.float32), put)
    full = dict(manifest)
    full["format_version"] = FORMAT_VERSION
    full["tensors"] = table
    full["payload"] = {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    text = zlib.compress(json.dumps(full, separators=(",", ":"), allow_nan=False).encode("utf-8"), 9)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_DEFLATE, len(text), zlib.crc32(text))
    return header + text + bytes(payload)


def _encode_float(arr: np.ndarray, put: Any) -> dict[str, Any]:
    """Raw float32; a tensor with enough exact zeros stores only its non-zeros and a mask."""
    flat = arr.reshape(-1)
    keep = flat != 0
    kept = int(keep.sum())
    entry: dict[str, Any] = {"enc": "f32", "shape": list(arr.shape), "mask": None}
    if flat.size and kept < flat.size:
        fmt, data = encode_mask(keep)
        if 4 * kept + len(data) < 4 * flat.size:
            entry["mask"] = {"format": fmt, "kept": kept, "data": put(data)}
            flat = flat[keep]
    entry["data"] = put(np.ascontiguousarray(flat, dtype="<f4").tobytes())
    return entry


def _encode_quant(t: PackedTensor, put: Any) -> dict[str, Any]:
    """An affine or codebook PackedTensor's entry: its parts are written as they are."""
    entry: dict[str, Any] = {
        "enc": "quant",
        "shape": list(t.shape),
        "bits": int(t.bits),
        "axis": t.axis,
        "code_min": int(t.code_min),
        "code_step": int(t.code_step),
        "codes": put(bytes(t.codes)),
        "mask": None,
        "codebook": None,
    }
    if t.mask_data is not None:
        entry["mask"] = {"format": t.mask_format, "kept": int(t.kept), "data": put(bytes(t.mask_data))}
    if t.codebook is not None:
        entry["codebook"] = put(np.ascontiguousarray(t.codebook, dtype="<f4").reshape(-1).tobytes())
    else:
        assert t.scale is not None
        entry["scale"] = put(np.ascontiguousarray(t.scale, dtype="<f4").reshape(-1).tobytes())
        entry["zero_point"] = None
        if t.zero_point is not None:
            entry["zp_dtype"], data = zero_point_bytes(t.zero_point)
            entry["zero_point"] = put(data)
    return entry


def write_artifact(
    path: str | os.PathLike[str], manifest: Mapping[str, Any], tensors: Mapping[str, Tensor]
) -> int:
    """Write an artifact atomically; returns its size in bytes."""
    from fewbit._io import atomic_write_bytes  # deferred: artifact/ imports nothing of fewbit's when loaded

    data = encode_artifact(manifest, tensors)
    atomic_write_bytes(path, data)
    return len(data)


# ----------------------------------------------------------------------------------------- reading


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load and verify the artifact at `path` (FewbitFormatError when it is not a sound artifact)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FewbitFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise FewbitFormatError(f"{path}: {size} bytes is larger than any fewbit artifact ({MAX_FILE_BYTES})")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FewbitFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_artifact(data, where=str(path))


def decode_artifact(data: bytes, *, where: str = "artifact") -> Artifact:
    """Parse and verify artifact bytes (FewbitFormatError when they are not a sound artifact)."""
    manifest, payload = _split(data, where)
    try:
        tensors = _decode_tensors(manifest, payload)
        _check_manifest(manifest, tensors)
    except FewbitFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
        raise FewbitFormatError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None
    _upgrade(manifest)
    return Artifact(manifest=manifest, tensors=tensors, nbytes=len(data))


# Format 1 named the runtime's adaptation methods after the algorithms that wrote them.
_FORMAT_1_METHODS = {"protonet": "prototypes", "finetune": "sgd"}


def _upgrade(manifest: dict[str, Any]) -> None:
    """An older manifest in this version's terms (in place)."""
    block = manifest.get("adaptation")
    if manifest["format_version"] == 1 and isinstance(block, dict) and block.get("method") in _FORMAT_1_METHODS:
        block["method"] = _FORMAT_1_METHODS[block["method"]]


def _split(data: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
    if len(data) == 0:
        raise FewbitFormatError(f"{where}: empty file, not a fewbit artifact")
    if len(data) < HEADER_BYTES:
        if not MAGIC.startswith(bytes(data[: len(MAGIC)])):
            raise FewbitFormatError(f"{where}: not a fewbit artifact (bad magic)")
        raise FewbitFormatError(f"{where}: truncated ({len(data)} bytes, the header alone is {HEADER_BYTES})")
    magic, version, flags, length, crc = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FewbitFormatError(f"{where}: not a fewbit artifact (bad magic)")
    if version not in READABLE_VERSIONS:
        newer = "newer than" if version > FORMAT_VERSION else "different from"
        raise FewbitFormatError(
            f"{where}: artifact format version {version} is {newer} the versions this fewbit reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}); re-export it or upgrade fewbit"
        )
    if flags & ~FLAG_DEFLATE:
        raise FewbitFormatError(f"{where}: unknown header flags {flags:#x}")
    if length > MAX_MANIFEST_BYTES:
        raise FewbitFormatError(
            f"{where}: header claims a {length}-byte manifest (limit {MAX_MANIFEST_BYTES})"
        )
    if HEADER_BYTES + length > len(data):
        raise FewbitFormatError(
            f"{where}: truncated (header claims a {length}-byte manifest, "
            f"file has {len(data) - HEADER_BYTES})"
        )
    raw = bytes(data[HEADER_BYTES : HEADER_BYTES + length])
    if zlib.crc32(raw) != crc:
        raise FewbitFormatError(f"{where}: manifest checksum mismatch (corrupt file)")
    if flags & FLAG_DEFLATE:
        raw = _inflate(raw, where)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FewbitFormatError(f"{where}: manifest is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != version:
        raise FewbitFormatError(f"{where}: manifest does not declare format version {version}")
    payload_info = manifest.get("payload")
    if not isinstance(payload_info, dict) or not isinstance(payload_info.get("length"), int):
        raise FewbitFormatError(f"{where}: manifest lacks the payload length")
    payload = memoryview(data)[HEADER_BYTES + length :]
    if payload_info["length"] != len(payload):
        what = "truncated" if payload_info["length"] > len(payload) else "trailing bytes after the payload"
        raise FewbitFormatError(
            f"{where}: {what} (manifest claims a {payload_info['length']}-byte payload, "
            f"file has {len(payload)})"
        )
    if hashlib.sha256(payload).hexdigest() != payload_info.get("sha256"):
        raise FewbitFormatError(f"{where}: payload sha256 mismatch (corrupt file)")
    return manifest, payload


def _inflate(raw: bytes, where: str) -> bytes:
    """Inflate a manifest, refusing more than MAX_MANIFEST_BYTES (no decompression bomb)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(raw, MAX_MANIFEST_BYTES)
    except zlib.error:
        raise FewbitFormatError(f"{where}: manifest does not inflate (corrupt file)") from None
    if inflater.unconsumed_tail:
        raise FewbitFormatError(f"{where}: manifest inflates to more than {MAX_MANIFEST_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FewbitFormatError(f"{where}: manifest is not one complete deflate stream (corrupt file)")
    return text


def _slice(payload: memoryview, ref: Any, expect: int, what: str) -> np.ndarray:
    if not (isinstance(ref, list) and len(ref) == 2 and all(isinstance(v, int) and v >= 0 for v in ref)):
        raise FewbitFormatError(f"malformed manifest: {what} has no valid [offset, length]")
    offset, length = ref
    if length != expect:
        raise FewbitFormatError(f"malformed manifest: {what} holds {length} bytes, its shape needs {expect}")
    if offset + length > len(payload):
        raise FewbitFormatError(f"malformed manifest: {what} points past the end of the payload")
    return np.frombuffer(payload[offset : offset + length], dtype=np.uint8)


def _shape(entry: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FewbitFormatError(f"malformed manifest: tensor {name} has an invalid shape")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise FewbitFormatError(f"malformed manifest: tensor {name} claims {math.prod(shape)} elements")
    return tuple(shape)


def _decode_tensors(manifest: Mapping[str, Any], payload: memoryview) -> dict[str, Tensor]:
    table = manifest["tensors"]
    if not isinstance(table, dict):
        raise FewbitFormatError("malformed manifest: `tensors` is not a table")
    total = 0
    for name, entry in table.items():
        total += math.prod(_shape(entry, name))
    if total > MAX_TOTAL_ELEMENTS:
        raise FewbitFormatError(f"malformed manifest: tensors claim {total} elements in all")
    version = manifest["format_version"]
    out: dict[str, Tensor] = {}
    for name, entry in table.items():
        shape = _shape(entry, name)
        numel = math.prod(shape)
        if entry["enc"] == "f32":
            mask, kept = _decode_mask(entry.get("mask"), payload, name, shape, numel, version)
            values = _slice(payload, entry["data"], 4 * kept, name).view("<f4").astype(np.float32)
            if mask is None:
                out[name] = values.reshape(shape)
            else:
                dense = np.zeros(numel, dtype=np.float32)
                dense[mask.reshape(-1)] = values
                out[name] = dense.reshape(shape)
            if not np.all(np.isfinite(out[name])):
                raise FewbitFormatError(f"malformed artifact: tensor {name} holds non-finite values")
        elif entry["enc"] == "quant":
            out[name] = _decode_quant(entry, payload, name, shape, numel, version)
        else:
            raise FewbitFormatError(
                f"malformed manifest: tensor {name} has unknown encoding {entry['enc']!r}"
            )
    return out


def _decode_quant(
    entry: Mapping[str, Any], payload: memoryview, name: str, shape: tuple[int, ...], numel: int, version: int
) -> PackedTensor:
    bits = entry["bits"]
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise FewbitFormatError(f"malformed manifest: tensor {name} has bits={bits!r} (1..8)")
    axis = entry["axis"]
    if axis is not None and not (isinstance(axis, int) and 0 <= axis < len(shape)):
        raise FewbitFormatError(f"malformed manifest: tensor {name} has axis={axis!r}")
    mask_format, mask_data, kept = _mask_entry(entry["mask"], payload, name, numel, version)
    codes = _slice(payload, entry["codes"], packed_nbytes(kept, bits), f"{name} codes")
    code_min, code_step = entry["code_min"], entry["code_step"]
    if not (
        isinstance(code_min, int)
        and isinstance(code_step, int)
        and abs(code_min) < 1 << 31
        and 0 < code_step < 1 << 31
    ):
        raise FewbitFormatError(f"malformed manifest: tensor {name} has invalid code_min/code_step")
    channels = 1 if axis is None else shape[axis]
    codebook = scale = zero_point = None
    if entry["codebook"] is not None:
        ref = entry["codebook"]
        k = ref[1] // 4 if isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], int) else -1
        if not 1 <= k <= 1 << 16:
            raise FewbitFormatError(f"malformed manifest: tensor {name} has an invalid codebook")
        codebook = _slice(payload, ref, 4 * k, f"{name} codebook").view("<f4").astype(np.float32)
        kept_codes = unpack_bits(codes, bits, kept) * code_step + code_min
        if kept_codes.size and (kept_codes.min() < 0 or kept_codes.max() >= k):
            raise FewbitFormatError(
                f"malformed artifact: tensor {name} has codes outside its {k}-entry codebook"
            )
        if not np.all(np.isfinite(codebook)):
            raise FewbitFormatError(f"malformed artifact: tensor {name} has a non-finite codebook")
    else:
        ref = entry["scale"]
        n = ref[1] // 4 if isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], int) else -1
        if n not in (1, channels):
            raise FewbitFormatError(
                f"malformed manifest: tensor {name} has {n} scales for {channels} channels"
            )
        scale = _slice(payload, ref, 4 * n, f"{name} scale").view("<f4").astype(np.float32)
        if not np.all(np.isfinite(scale)):
            raise FewbitFormatError(f"malformed artifact: tensor {name} has non-finite scales")
        if entry["zero_point"] is not None:
            wide = entry.get("zp_dtype") == "i32"
            raw = _slice(payload, entry["zero_point"], (4 if wide else 1) * n, f"{name} zero_point")
            zero_point = (raw.view("<i4") if wide else raw).astype(np.int64)
    tensor = PackedTensor(
        shape=shape,
        bits=bits,
        codes=codes.tobytes(),
        kept=kept,
        encoding="affine" if codebook is None else "codebook",
        code_min=code_min,
        code_step=code_step,
        scale=scale,
        zero_point=zero_point,
        axis=axis,
        mask_format=mask_format,
        mask_data=mask_data,
        codebook=codebook,
    )
    try:
        _ = tensor.mask  # decodes (and checks) the mask once; the tensor keeps it
    except ValueError as exc:
        raise FewbitFormatError(f"malformed artifact: tensor {name}: {exc}") from None
    return tensor


def _mask_entry(
    m: Any, payload: memoryview, name: str, numel: int, version: int
) -> tuple[str | None, bytes | None, int]:
    """(format, data, kept count) of a tensor entry's `mask` field; (None, None, numel) when dense."""
    if m is None:
        return None, None, numel
    kept = m["kept"]
    if not isinstance(kept, int) or not 0 <= kept <= numel:
        raise FewbitFormatError(f"malformed manifest: tensor {name} keeps {kept!r} of {numel} elements")
    ref = m["data"]
    if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[1], int)):
        raise FewbitFormatError(f"malformed manifest: tensor {name} mask has no valid [offset, length]")
    fmt = m["format"]
    if fmt not in MASK_FORMATS[: 2 if version < 2 else 3]:
        raise FewbitFormatError(f"malformed manifest: tensor {name} mask has format {fmt!r}")
    return fmt, _slice(payload, ref, ref[1], f"{name} mask").tobytes(), kept


def _decode_mask(
    m: Any, payload: memoryview, name: str, shape: tuple[int, ...], numel: int, version: int
) -> tuple[np.ndarray | None, int]:
    """(boolean mask of `shape` or None, kept count) of a tensor entry's `mask` field."""
    fmt, data, kept = _mask_entry(m, payload, name, numel, version)
    if fmt is None or data is None:
        return None, kept
    try:
        return decode_mask(fmt, data, numel, kept).reshape(shape), kept
    except ValueError as exc:
        raise FewbitFormatError(f"malformed artifact: tensor {name}: {exc}") from None


def _check_manifest(manifest: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> None:
    arch = manifest["architecture"]
    layers = arch["layers"]
    if not isinstance(layers, list) or not layers:
        raise FewbitFormatError("malformed manifest: architecture has no layers")
    for i, layer in enumerate(layers):
        for key in ("weight", "bias"):
            ref = layer.get(key)
            if ref is not None and ref not in tensors:
                raise FewbitFormatError(
                    f"malformed manifest: layer {i} ({layer.get('op')}) names missing tensor {ref!r}"
                )
    pre = manifest["preprocessing"]
    if pre.get("kind", "image") != "image":  # a table, a series: the runtime checks that kind's own fields
        return
    size = pre["image_size"]
    if not isinstance(size, int) or not 1 <= size <= 4096:
        raise FewbitFormatError(f"malformed manifest: preprocessing.image_size={size!r}")


def versus_float32(ratio: float, digits: int = 1) -> str:
    """`ratio` (float32 bytes / stored bytes) in words: `7.5x smaller than float32`, `1.3x larger
    than float32` (a small model, a table's, whose manifest outweighs its weights), or `about the
    size of float32` within 5% (where `1.0x smaller` would read as a saving)."""
    if ratio >= 1.05:
        return f"{ratio:.{digits}f}x smaller than float32"
    if ratio > 0 and 1 / ratio >= 1.05:
        return f"{1 / ratio:.{digits}f}x larger than float32"
    return "about the size of float32"
