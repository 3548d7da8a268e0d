"""The loader fuzzed (bounded): any damage raises FewbitFormatError, never a crash, hang or blow-up."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewbit.artifact.format import (
    FORMAT_VERSION,
    HEADER_BYTES,
    MAGIC,
    decode_artifact,
    encode_artifact,
)
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import FewbitFormatError
from fewbit.runtime import load

MANIFEST = {
    "architecture": {
        "name": "tiny",
        "input_shape": [1, 6, 6],
        "embedding_layers": 4,
        "layers": [
            {
                "op": "conv2d",
                "name": "c",
                "weight": "c.weight",
                "bias": None,
                "stride": 1,
                "padding": 1,
                "input_quant": {"bits": 8, "scale": 0.01, "zero_point": 3, "qmin": 0, "qmax": 255},
            },
            {"op": "batchnorm", "name": "bn", "weight": "bn.weight", "bias": "bn.bias", "eps": 1e-5},
            {"op": "relu"},
            {"op": "flatten"},
            {
                "op": "linear",
                "name": "head",
                "weight": "head.weight",
                "bias": "head.bias",
                "input_quant": None,
            },
        ],
    },
    "preprocessing": {"image_size": 6},
    "adaptation": {
        "method": "finetune",
        "scope": "head",
        "steps": 2,
        "lr": 0.1,
        "head_init": "own",
        "embed": "separate",
    },
}


def _artifact() -> bytes:
    rng = np.random.default_rng(0)
    mask = rng.random((4, 1, 3, 3)) < 0.5
    return encode_artifact(
        MANIFEST,
        {
            "c.weight": PackedTensor.from_codes(
                rng.integers(-2, 2, (4, 1, 3, 3)), 2, scale=np.full(4, 0.3, np.float32), axis=0, mask=mask
            ),
            "bn.weight": np.ones(4, np.float32),
            "bn.bias": np.zeros(4, np.float32),
            "head.weight": rng.standard_normal((3, 144)).astype(np.float32),
            "head.bias": np.zeros(3, np.float32),
        },
    )


GOOD = _artifact()


def _must_reject(data: bytes) -> None:
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(FewbitFormatError) as info:
            load(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 64 * len(GOOD) + (8 << 20)  # no allocation driven by a claimed size
    message = str(info.value)
    assert message and "\n" not in message


def test_the_good_artifact_loads() -> None:
    model = load(GOOD)
    assert model.logits(np.zeros((2, 1, 6, 6), np.float32)).shape == (2, 3)


def test_zero_length() -> None:
    _must_reject(b"")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(GOOD) - 1))
def test_truncated(cut: int) -> None:
    _must_reject(GOOD[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(GOOD) - 1), bit=st.integers(0, 7))
def test_bit_flipped(position: int, bit: int) -> None:
    data = bytearray(GOOD)
    data[position] ^= 1 << bit
    _must_reject(bytes(data))


@settings(max_examples=40, deadline=None)
@given(length=st.integers(0, 2**32 - 1))
def test_oversized_header_claims(length: int) -> None:
    real = struct.unpack_from("<I", GOOD, 12)[0]
    if length == real:
        return
    data = bytearray(GOOD)
    struct.pack_into("<I", data, 12, length)
    _must_reject(bytes(data))


@settings(max_examples=20, deadline=None)
@given(version=st.integers(0, 2**16 - 1).filter(lambda v: v != FORMAT_VERSION))
def test_wrong_version(version: int) -> None:
    data = bytearray(GOOD)
    struct.pack_into("<H", data, 8, version)
    with pytest.raises(FewbitFormatError, match="format version"):
        decode_artifact(bytes(data))


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=200))
def test_random_bytes(junk: bytes) -> None:
    _must_reject(junk)
    _must_reject(MAGIC + junk)


@settings(max_examples=40, deadline=None)
@given(junk=st.binary(min_size=1, max_size=64), where=st.integers(HEADER_BYTES, len(GOOD)))
def test_inserted_bytes(junk: bytes, where: int) -> None:
    _must_reject(GOOD[:where] + junk + GOOD[where:])


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, -1, 2, 3, 255, 2**31, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(-3, 10**6), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_manifest_values_replaced_with_valid_checksums(data: st.DataObject) -> None:
    """Structure-aware: a manifest edited and re-checksummed either loads and runs or is rejected cleanly."""
    length = struct.unpack_from("<I", GOOD, 12)[0]
    manifest = json.loads(zlib.decompress(GOOD[HEADER_BYTES : HEADER_BYTES + length]))
    payload = GOOD[HEADER_BYTES + length :]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(manifest)[1:]))
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = data.draw(JSON_VALUES)
    raw = zlib.compress(json.dumps(manifest).encode())
    blob = struct.pack("<8sHHII", MAGIC, FORMAT_VERSION, 1, len(raw), zlib.crc32(raw)) + raw + payload
    started = time.perf_counter()
    try:
        model = load(blob)
    except FewbitFormatError as exc:
        assert "\n" not in str(exc)
    else:
        x = np.random.default_rng(0).random((3, *model.input_shape)).astype(np.float32)
        assert np.all(np.isfinite(model.embed(x)))
    assert time.perf_counter() - started < 2.0


def _rice_artifact() -> bytes:
    """GOOD with a 75%-pruned conv and a 90%-zero float head: both masks Rice-coded."""
    rng = np.random.default_rng(1)
    keep = rng.random((16, 1, 3, 3)) < 0.25
    head = np.where(rng.random((3, 576)) < 0.1, rng.standard_normal((3, 576)), 0).astype(np.float32)
    manifest = json.loads(json.dumps(MANIFEST))
    return encode_artifact(
        manifest,
        {
            "c.weight": PackedTensor.from_codes(
                rng.integers(-2, 2, (16, 1, 3, 3)), 2, scale=np.full(16, 0.3, np.float32), axis=0, mask=keep
            ),
            "bn.weight": np.ones(16, np.float32),
            "bn.bias": np.zeros(16, np.float32),
            "head.weight": head,
            "head.bias": np.zeros(3, np.float32),
        },
    )


GOOD_RICE = _rice_artifact()


def _split_good(blob: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", blob, 12)[0]
    return json.loads(zlib.decompress(blob[HEADER_BYTES : HEADER_BYTES + length])), blob[HEADER_BYTES + length :]


def _reseal(manifest: dict, payload: bytes) -> bytes:
    """An artifact whose checksums are right for whatever `manifest` and `payload` hold."""
    manifest = dict(manifest, payload={"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    raw = zlib.compress(json.dumps(manifest).encode())
    return struct.pack("<8sHHII", MAGIC, FORMAT_VERSION, 1, len(raw), zlib.crc32(raw)) + raw + payload


def test_the_rice_artifact_loads_and_uses_rice_masks() -> None:
    manifest, _ = _split_good(GOOD_RICE)
    assert {manifest["tensors"][n]["mask"]["format"] for n in ("c.weight", "head.weight")} == {"rice"}
    model = load(GOOD_RICE)
    assert np.all(np.isfinite(model.logits(np.ones((2, 1, 6, 6), np.float32))))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_payload_bytes_changed_with_valid_checksums(data: st.DataObject) -> None:
    """The decoders themselves (Rice masks, packed codes) on hostile bytes behind a correct sha256:
    a clean FewbitFormatError or a model that runs, fast and without a large allocation."""
    manifest, payload = _split_good(GOOD_RICE)
    entry = manifest["tensors"][data.draw(st.sampled_from(["c.weight", "head.weight"]))]
    offset, length = data.draw(st.sampled_from([entry["mask"]["data"], entry.get("codes") or entry["data"]]))
    blob = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[offset + data.draw(st.integers(0, max(0, length - 1)))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        entry["mask"]["kept"] = data.draw(st.integers(0, 600))
    started = time.perf_counter()
    tracemalloc.start()
    try:
        model = load(_reseal(manifest, bytes(blob)))
    except FewbitFormatError as exc:
        assert "\n" not in str(exc)
    else:
        x = np.random.default_rng(0).random((2, *model.input_shape)).astype(np.float32)
        assert np.all(np.isfinite(model.embed(x)))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 8 << 20
