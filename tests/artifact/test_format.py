"""The artifact format: round trips of every tensor encoding, and clear errors."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from fewbit.artifact.format import (
    FORMAT_VERSION,
    HEADER_BYTES,
    MAGIC,
    decode_artifact,
    encode_artifact,
    read_artifact,
    write_artifact,
)
from fewbit.artifact.tensor import PackedTensor
from fewbit.errors import FewbitFormatError

MANIFEST = {
    "architecture": {
        "name": "tiny",
        "input_shape": [1, 4, 4],
        "embedding_layers": 1,
        "layers": [{"op": "flatten"}],
    },
    "preprocessing": {"image_size": 4},
}


def _tensors() -> dict[str, np.ndarray | PackedTensor]:
    rng = np.random.default_rng(0)
    mask = rng.random((6, 3, 3, 3)) < 0.3
    return {
        "float": rng.standard_normal((5, 7)).astype(np.float32),
        "sparse_float": np.where(rng.random(400) < 0.1, 1.5, 0).astype(np.float32),
        "w4_per_channel": PackedTensor.from_codes(
            rng.integers(-8, 8, (6, 3, 3, 3)), 4, scale=rng.random(6).astype(np.float32) + 0.1, axis=0
        ),
        "w2_masked": PackedTensor.from_codes(
            rng.integers(-2, 2, (6, 3, 3, 3)), 2, scale=np.array([0.5], np.float32), mask=mask
        ),
        "w1_sign": PackedTensor.from_codes(
            rng.choice([-1, 1], (4, 10)), 1, scale=np.full(4, 0.25, np.float32), axis=0
        ),
        "w3_asym": PackedTensor.from_codes(
            rng.integers(0, 8, (4, 10)),
            3,
            scale=np.full(4, 0.1, np.float32),
            zero_point=np.array([3, 4, 0, 7]),
            axis=0,
        ),
        "w8": PackedTensor.from_codes(rng.integers(-128, 128, (300,)), 8, scale=np.array([0.01], np.float32)),
        "codebook": PackedTensor.from_codes(
            rng.integers(0, 16, (8, 8)), 4, codebook=np.linspace(-1, 1, 16).astype(np.float32)
        ),
    }


def test_round_trip_of_every_encoding(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "a.fewbit"
    size = write_artifact(path, MANIFEST, tensors)
    assert path.stat().st_size == size
    art = read_artifact(path)
    assert art.manifest["format_version"] == FORMAT_VERSION
    assert art.manifest["architecture"] == MANIFEST["architecture"]
    for name, t in tensors.items():
        got = art.tensors[name]
        if isinstance(t, PackedTensor):
            assert isinstance(got, PackedTensor)
            np.testing.assert_array_equal(got.dequantize(), t.dequantize())
            np.testing.assert_array_equal(got.integer_weights(), t.integer_weights())
        else:
            np.testing.assert_array_equal(got, t)
    assert art.manifest["tensors"]["sparse_float"]["mask"] is not None  # 90% zeros: stored sparse
    assert art.manifest["tensors"]["float"]["mask"] is None


def test_payload_is_as_small_as_the_packing() -> None:
    codes = np.random.default_rng(0).integers(-8, 8, (64, 64, 3, 3))
    t = PackedTensor.from_codes(codes, 4, scale=np.ones(64, np.float32), axis=0)
    art = decode_artifact(encode_artifact(MANIFEST, {"w": t}))
    assert art.manifest["payload"]["length"] == codes.size // 2 + 64 * 4  # codes + float32 scales


def test_encoding_is_deterministic() -> None:
    assert encode_artifact(MANIFEST, _tensors()) == encode_artifact(MANIFEST, _tensors())


def test_write_is_atomic_no_temp_left(tmp_path: Path) -> None:
    write_artifact(tmp_path / "m.fewbit", MANIFEST, _tensors())
    assert [p.name for p in tmp_path.iterdir()] == ["m.fewbit"]


def _rebuild(manifest: dict, payload: bytes, version: int = FORMAT_VERSION) -> bytes:
    raw = zlib.compress(json.dumps(manifest).encode())
    return struct.pack("<8sHHII", MAGIC, version, 1, len(raw), zlib.crc32(raw)) + raw + payload


def _parts(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", data, 12)[0]
    manifest = json.loads(zlib.decompress(data[HEADER_BYTES : HEADER_BYTES + length]))
    return manifest, data[HEADER_BYTES + length :]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["tensors"]["float"].update(shape=[100000, 100000]), "claims"),
        (lambda m: m["tensors"]["w8"].update(codes=[0, 10**12]), "holds|past the end"),
        (lambda m: m["tensors"]["w2_masked"]["mask"].update(kept=10**9), "keeps"),
        (lambda m: m["tensors"]["w4_per_channel"].update(bits=9), "bits"),
        (lambda m: m["tensors"]["float"].update(enc="pickle"), "unknown encoding"),
        (lambda m: m["architecture"]["layers"].append({"op": "linear", "weight": "nope"}), "missing tensor"),
        (lambda m: m.pop("preprocessing"), "malformed manifest"),
        (lambda m: m.update(format_version=99), "format version"),
    ],
)
def test_malformed_manifests_raise_one_clear_error(edit, message: str) -> None:  # noqa: ANN001
    manifest, payload = _parts(encode_artifact(MANIFEST, _tensors()))
    edit(manifest)
    with pytest.raises(FewbitFormatError, match=message) as info:
        decode_artifact(_rebuild(manifest, payload))
    assert "\n" not in str(info.value)


def test_wrong_version_names_both_versions() -> None:
    manifest, payload = _parts(encode_artifact(MANIFEST, _tensors()))
    with pytest.raises(FewbitFormatError, match=r"version 3 is newer.*\(1, 2\)"):
        decode_artifact(_rebuild(manifest, payload, version=3))


def test_trailing_bytes_and_missing_file(tmp_path: Path) -> None:
    data = encode_artifact(MANIFEST, _tensors())
    with pytest.raises(FewbitFormatError, match="trailing bytes"):
        decode_artifact(data + b"\x00")
    with pytest.raises(FewbitFormatError, match="cannot read"):
        read_artifact(tmp_path / "absent.fewbit")
    with pytest.raises(FewbitFormatError, match="cannot read"):
        read_artifact(tmp_path)  # a directory


def test_no_pickle_anywhere() -> None:
    import fewbit.artifact.format as fmt
    import fewbit.artifact.packing as packing

    for module in (fmt, packing):
        source = Path(module.__file__).read_text()
        assert "pickle" not in source.replace("No pickle", "").replace("without pickle", "")
        assert "allow_pickle=True" not in source


def test_version_1_files_still_read_but_may_not_hold_rice_masks() -> None:
    """Version 2 added Rice-coded masks; a version 1 file (bitmaps, index lists) loads as before."""
    tensors = _tensors()
    sparse = np.random.default_rng(0).random((64, 64)) < 0.2
    tensors["w2_rice"] = PackedTensor.from_codes(np.ones((64, 64)), 2, scale=np.ones(1, np.float32), mask=sparse)
    manifest, payload = _parts(encode_artifact(MANIFEST, tensors))
    assert manifest["tensors"]["w2_rice"]["mask"]["format"] == "rice"
    manifest["format_version"] = 1
    with pytest.raises(FewbitFormatError, match="mask has format 'rice'"):
        decode_artifact(_rebuild(manifest, payload, version=1))
    rng = np.random.default_rng(1)
    spread = np.zeros(10_000, bool)
    spread[[3, 5000, 9000]] = True
    v1 = {
        "float": rng.standard_normal((5, 7)).astype(np.float32),
        "bitmap": PackedTensor.from_codes(rng.integers(-2, 2, 400), 2, scale=np.ones(1), mask=rng.random(400) < 0.6),
        "indices": PackedTensor.from_codes(np.ones(10_000), 1, scale=np.ones(1), mask=spread),
    }
    manifest, payload = _parts(encode_artifact(MANIFEST, v1))
    assert [manifest["tensors"][n]["mask"]["format"] for n in ("bitmap", "indices")] == ["bitmap", "indices"]
    manifest["format_version"] = 1
    old = decode_artifact(_rebuild(manifest, payload, version=1))
    for name, t in v1.items():
        want = t.dequantize() if isinstance(t, PackedTensor) else t
        got = old.tensors[name]
        np.testing.assert_array_equal(got.dequantize() if isinstance(got, PackedTensor) else got, want)


def test_a_file_larger_than_float32_is_called_larger() -> None:
    """A table model's artifact (its manifest outweighs its weights) was `1.0x smaller than float32`."""
    from fewbit.artifact.format import versus_float32

    assert versus_float32(7.5) == "7.5x smaller than float32"
    assert versus_float32(0.5) == "2.0x larger than float32"
    assert versus_float32(0.97) == versus_float32(1.02) == "about the size of float32"
    assert versus_float32(14.02, 2) == "14.02x smaller than float32"
