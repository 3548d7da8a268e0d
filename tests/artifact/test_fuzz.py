"""The loader fuzzed (bounded): any damage raises FewbitFormatError, never a crash, hang or blow-up."""

from __future__ import annotations

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
from fewbit.errors import FewbitError, FewbitFormatError
from fewbit.runtime import adapt, load

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
        "method": "sgd",
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
        try:
            assert np.all(np.isfinite(model.embed(x)))
            assert adapt(model, x, np.array([0, 1, 1])).predict(x).shape == (3,)
        except FewbitError as exc:  # e.g. values that overflow: said in one line, never returned as results
            assert "\n" not in str(exc)
    assert time.perf_counter() - started < 2.0


# ------------------------------------------------------------- random architectures, valid checksums

HOSTILE_NUMBERS = st.sampled_from([0, -1, 1, 2, 3, 0.5, 1e-9, 1e9, 10**9, 2**31, 2**63, 1e308, 1.5, -0.0])


@st.composite
def random_artifact(draw: st.DrawFn) -> tuple[bytes, tuple[int, int, int]]:
    """An artifact built from a random layer list: mostly architectures that chain (so the runtime
    runs them), with random widths, kernels, strides, paddings, encodings and weight scales (some
    large enough to overflow), and hostile values dropped anywhere into the manifest."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    channels, side = draw(st.integers(1, 3)), draw(st.integers(3, 12))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e3, 1e20, 3e38]))
    layers: list[dict] = []
    tensors: dict[str, object] = {}
    c = channels

    def weight(name: str, shape: tuple[int, ...]) -> None:
        if draw(st.booleans()):
            values = np.clip(rng.standard_normal(shape) * scale, -3e38, 3e38)
            tensors[name] = values.astype(np.float32)
        else:
            bits = draw(st.integers(1, 8))
            lo, hi = (-1, 2) if bits == 1 else (-(1 << (bits - 1)), 1 << (bits - 1))
            codes = rng.choice([-1, 1], shape) if bits == 1 else rng.integers(lo, hi, shape)
            out = shape[0]
            per_channel = draw(st.booleans())
            scales = (rng.random(out if per_channel else 1) * scale + 1e-3).astype(np.float32)
            mask = rng.random(shape) < 0.7 if draw(st.booleans()) else None
            tensors[name] = PackedTensor.from_codes(codes, bits, scale=scales, axis=0 if per_channel else None,
                                                    mask=mask)

    h = side
    for i in range(draw(st.integers(0, 3))):
        cout, k = draw(st.integers(1, 8)), draw(st.integers(1, 3))
        spec = {"op": "conv2d", "name": f"c{i}", "weight": f"c{i}.weight", "bias": None,
                "stride": draw(st.integers(1, 2)), "padding": draw(st.integers(0, 1)), "input_quant": None}
        h = (h + 2 * spec["padding"] - k) // spec["stride"] + 1
        if draw(st.booleans()):
            spec["input_quant"] = {"bits": 8, "qmin": 0, "qmax": 255, "dynamic": True}
        weight(spec["weight"], (cout, c, k, k))
        if draw(st.booleans()):
            spec["bias"] = f"c{i}.bias"
            tensors[spec["bias"]] = rng.standard_normal(cout).astype(np.float32)
        layers.append(spec)
        if draw(st.booleans()):
            layers.append({"op": "batchnorm", "name": f"n{i}", "weight": f"n{i}.weight", "bias": f"n{i}.bias",
                           "eps": 1e-5})
            tensors[f"n{i}.weight"] = rng.standard_normal(cout).astype(np.float32)
            tensors[f"n{i}.bias"] = rng.standard_normal(cout).astype(np.float32)
        layers.append({"op": "relu"})
        if draw(st.booleans()):
            pool = draw(st.integers(1, 3))
            layers.append({"op": "maxpool2d", "kernel": pool})
            h //= pool
        c = cout
    layers.append({"op": "flatten"})
    embedding = len(layers)
    # mostly the true flat size (the network then runs); otherwise the loader must say it does not fit
    features = c * h * h if h > 0 and draw(st.integers(0, 4)) else draw(st.integers(1, 64))
    ways = draw(st.integers(0, 5))
    if ways:
        weight("head.weight", (ways, features))
        tensors["head.bias"] = rng.standard_normal(ways).astype(np.float32)
        layers.append({"op": "linear", "name": "head", "weight": "head.weight", "bias": "head.bias",
                       "input_quant": None, "weight_quant": None})
    manifest = {
        "architecture": {"name": "random", "input_shape": [channels, side, side], "embedding_layers": embedding,
                         "layers": layers},
        "preprocessing": {"image_size": side, "channels": channels, "mean": 0.0, "std": 1.0, "invert": "auto"},
        "algorithm": draw(st.sampled_from(["protonet", "maml", "finetune"])),
        "adaptation": {"method": draw(st.sampled_from(["prototypes", "sgd"])),
                       "embed": draw(st.sampled_from(["joint", "separate"])),
                       "scope": draw(st.sampled_from(["head", "head+bias+norm", "none", "bias"])),
                       "steps": draw(st.integers(0, 3)), "lr": 0.1,
                       "head_init": draw(st.sampled_from(["own", "zeros", "prototypes"]))},
    }
    for _ in range(draw(st.integers(0, 2))):  # hostile values anywhere
        path = draw(st.sampled_from(_paths(manifest)[1:]))
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(st.one_of(HOSTILE_NUMBERS, JSON_VALUES))
    return encode_artifact(manifest, tensors), (channels, side, side)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=random_artifact())
def test_random_manifests_load_run_and_inspect_or_fail_in_one_line(case, tmp_path_factory) -> None:
    """Loader, runtime (embed, adapt, predict) and inspect on random architectures with valid
    checksums: each either gives a finite result or one FewbitError line, in bounded time and memory."""
    from hypothesis import event

    from fewbit.deploy.inspect import inspect_artifact
    from fewbit.errors import FewbitError

    blob, shape = case
    started = time.perf_counter()
    tracemalloc.start()
    try:
        model = load(blob)
    except FewbitFormatError as exc:
        model = None
        event("refused at load")
        assert str(exc) and "\n" not in str(exc)
    try:
        if model is not None:
            x = np.random.default_rng(1).random((4, *shape)).astype(np.float32)
            try:
                z = model.embed(x)
                assert z.shape[0] == 4 and np.all(np.isfinite(z))
                preds = adapt(model, x, np.array([0, 1, 0, 1])).predict(x)
                assert preds.shape == (4,) and set(preds.tolist()) <= {0, 1}
                event("ran")
            except FewbitError as exc:
                event(f"refused at run: {type(exc).__name__}")
                assert str(exc) and "\n" not in str(exc), str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    path = tmp_path_factory.mktemp("inspect") / "m.fewbit"
    path.write_bytes(blob)
    try:
        info = inspect_artifact(path)
        assert info["bytes"] == len(blob)
    except FewbitFormatError as exc:
        assert "\n" not in str(exc)
    assert time.perf_counter() - started < 3.0
