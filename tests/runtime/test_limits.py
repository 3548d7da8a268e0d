"""Artifacts that ask for unbounded work or memory, or hold values that make garbage: refused up front."""

from __future__ import annotations

import copy
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fewbit.runtime as rt
from fewbit.artifact.format import encode_artifact
from fewbit.artifact.tensor import PackedTensor
from fewbit.deploy.torch_export import artifact_from_model
from fewbit.errors import FewbitFormatError, LimitError, NumericError
from fewbit.runtime import limits
from tests.bounded import one_line_error, run_bounded
from tests.deploy.helpers import compressed_conv4, compressed_mlp, encode_allowing_nan, glyphs


@pytest.fixture(scope="module")
def parts() -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, tensors) of a small float Conv-4 MAML artifact."""
    return artifact_from_model(compressed_conv4(None, ways=3, width=8), algorithm="maml")


def _blob(parts: tuple[dict[str, Any], dict[str, Any]], edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The artifact with its manifest edited, checksums valid (encode_artifact computes them)."""
    manifest = copy.deepcopy(parts[0])
    edit(manifest)
    return encode_allowing_nan(manifest, parts[1])


def _refused(data: bytes, match: str) -> str:
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(FewbitFormatError, match=match) as info:
            rt.load(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5 and peak < 32 * len(data) + (16 << 20)
    assert "\n" not in str(info.value)
    return str(info.value)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("preprocessing.std", 0, "std=0 must be a number"),
        ("preprocessing.std", -1.0, "std=-1.0"),
        ("preprocessing.std", float("nan"), "preprocessing.std is not a finite number"),
        ("preprocessing.mean", float("inf"), "preprocessing.mean is not a finite number"),
        ("preprocessing.channels", 1e6, "channels=1000000.0 does not match"),
        ("preprocessing.channels", 1000000, "channels=1000000 does not match"),
        ("preprocessing.image_size", 100000, "image_size=100000"),
        ("preprocessing.image_size", 512, "image_size=512 does not match"),
        ("preprocessing.invert", "maybe", "invert='maybe'"),
        ("architecture.input_shape", [1000000, 28, 28], "beyond the limits"),
        ("architecture.input_shape", [1, 100000, 100000], "beyond the limits"),
        ("adaptation.steps", 10**9, "steps=1000000000: must be an integer in 0..10000"),
        ("adaptation.steps", 1e9, "steps=1000000000.0"),
        ("adaptation.lr", float("inf"), "adaptation.lr is not a finite number"),
        ("adaptation.lr", "fast", "lr='fast'"),
        ("adaptation.method", ["finetune"], "adaptation.method=list is not a name"),
        ("algorithm", 5, "algorithm=5"),
    ],
)
def test_manifest_values_beyond_the_limits(parts, path: str, value: Any, match: str) -> None:
    _refused(_blob(parts, _set(path, value)), match)


@pytest.mark.parametrize(
    ("op", "key", "value"),
    [
        ("conv2d", "padding", [1]),
        ("conv2d", "padding", [0, 1, 1]),
        ("conv2d", "padding", [-1, 1]),
        ("conv2d", "padding", [0, 17]),
        ("conv2d", "padding", True),
        ("conv2d", "padding", 1.5),
        ("conv2d", "padding", "1"),
        ("maxpool2d", "kernel", [0, 2]),
        ("maxpool2d", "kernel", [1, 17]),
        ("maxpool2d", "kernel", [True, 2]),
        ("maxpool2d", "kernel", {"h": 1, "w": 2}),
        ("maxpool2d", "stride", [2, 1]),
    ],
)
def test_padding_and_pool_sizes_are_an_integer_or_height_width_within_bounds(
    parts, op: str, key: str, value: Any
) -> None:
    """Rectangular sizes (a series' `[0, 1]` padding, `[1, 2]` pooling) are read as strictly as square ones."""

    def edit(manifest: dict[str, Any]) -> None:
        next(layer for layer in manifest["architecture"]["layers"] if layer["op"] == op)[key] = value

    _refused(_blob(parts, edit), "must be an integer or \\[height, width\\]|only kernel == stride")


def test_a_conv_wide_enough_to_need_gigabytes_is_refused_at_load() -> None:
    """512x512 input into 4096 channels: 4 GiB per image before the fix ran it (48 GiB with 12 images)."""
    manifest = {
        "architecture": {
            "name": "wide", "input_shape": [1, 512, 512], "embedding_layers": 2,
            "layers": [{"op": "conv2d", "name": "c", "weight": "c.weight", "bias": None, "stride": 1, "padding": 1},
                       {"op": "flatten"}],
        },
        "preprocessing": {"image_size": 512},
        "adaptation": {"method": "prototypes"},
        "algorithm": "protonet",
    }
    weight = PackedTensor.from_codes(np.ones((4096, 1, 3, 3), np.int64), 2, scale=np.ones(1, np.float32))
    message = _refused(encode_artifact(manifest, {"c.weight": weight}), "per image for a forward pass")
    assert "GiB" in message


def test_a_batch_or_an_adaptation_over_budget_is_refused_before_it_runs(parts, monkeypatch) -> None:
    model = rt.load(_blob(parts, lambda m: None))
    x, y = glyphs(3, 4, seed=1)
    monkeypatch.setattr(limits, "MAX_BATCH_BYTES", model.cost.bytes_for(5))
    model.embed(x[:5])
    with pytest.raises(LimitError, match="a batch of 6 images needs about"):
        model.embed(x[:6])
    monkeypatch.setattr(limits, "MAX_BATCH_BYTES", 4 << 30)
    monkeypatch.setattr(limits, "MAX_ADAPT_MACS", 100 * len(y) * model.cost.macs)
    rt.adapt(model, x, y, steps=5)
    with pytest.raises(LimitError, match="adapting for 1000 steps on 12 images"):
        rt.adapt(model, x, y, steps=1000)


def test_the_estimate_bounds_the_memory_a_pass_really_takes() -> None:
    manifest, tensors = artifact_from_model(compressed_conv4(None, ways=5, width=16), algorithm="maml")
    manifest["adaptation"]["scope"] = "head+bias+norm"  # the backward pass runs through the body
    model = rt.load(encode_artifact(manifest, tensors))
    x, y = glyphs(5, 8, seed=1)
    for backward in (False, True):
        tracemalloc.start()
        if backward:
            rt.adapt(model, x, y, steps=2)
        else:
            model.embed(x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= model.cost.bytes_for(len(x), backward), (backward, peak)


def test_non_finite_learning_rates_and_steps_beyond_the_limit(parts) -> None:
    model = rt.load(_blob(parts, lambda m: None))
    x, y = glyphs(3, 2, seed=1)
    for lr in (float("inf"), float("nan"), 0.0, -1.0, 1e30):
        with pytest.raises(LimitError, match="lr="):
            rt.adapt(model, x, y, lr=lr)
    with pytest.raises(LimitError, match="steps=1000000000"):
        rt.adapt(model, x, y, steps=10**9)


def test_overflowing_values_are_an_error_not_garbage() -> None:
    manifest, tensors = artifact_from_model(compressed_mlp(None, ways=3), algorithm="maml")
    first = next(name for name in tensors if name.endswith("weight"))
    tensors = {**tensors, first: np.full_like(tensors[first], 3e38)}  # finite, but any sum overflows
    model = rt.load(encode_artifact(manifest, tensors))
    x, y = glyphs(3, 2, seed=1)
    with pytest.raises(NumericError, match="overflow"):
        model.embed(x)
    with pytest.raises(NumericError):
        rt.adapt(model, x, y).predict(x)


def _adapt_cli(tmp_path: Path, artifact: Path, *extra: str):
    from PIL import Image

    x, y = glyphs(2, 2, seed=4)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = tmp_path / "support" / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - 255 * image[0]).astype(np.uint8)).save(folder / f"{i}.png")
    return run_bounded(["adapt", str(artifact), "--support", str(tmp_path / "support"), "--query",
                        str(tmp_path / "support"), "--json", *extra], tmp_path, timeout=60)


@pytest.mark.slow
def test_the_adapt_command_under_memory_and_time_limits(parts, tmp_path: Path) -> None:
    """`channels: 1e6` was a MemoryError, `steps: 1e9` a hang, `std: 0` and `--lr inf` printed NaN with exit 0."""
    for name, edit, match in (
        ("channels", _set("preprocessing.channels", 1000000), "channels=1000000"),
        ("steps", _set("adaptation.steps", 10**9), "steps=1000000000"),
        ("std", _set("preprocessing.std", 0), "std=0"),
    ):
        artifact = tmp_path / f"{name}.fewbit"
        artifact.write_bytes(_blob(parts, edit))
        assert match in one_line_error(_adapt_cli(tmp_path, artifact))
    good = tmp_path / "good.fewbit"
    good.write_bytes(_blob(parts, lambda m: None))
    result = _adapt_cli(tmp_path, good, "--lr=inf")
    assert result.returncode == 2 and "--lr: must be a finite number" in result.stderr
    result = _adapt_cli(tmp_path, good)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))
    assert len(data["predictions"]) == 4
