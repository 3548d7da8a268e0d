"""Export from PyTorch: what is stored, how many bytes, and agreement with the compression accounting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewbit.deploy import export, inspect_artifact, read_artifact
from fewbit.errors import ConfigError
from tests.deploy.helpers import compressed_conv4, compressed_mlp


def test_protonet_conv4_stores_no_head_and_no_cancelled_bias(tmp_path: Path) -> None:
    info = export(compressed_conv4("quant:w4", ways=5), tmp_path / "m.fewbit", algorithm="protonet")
    manifest = read_artifact(tmp_path / "m.fewbit").manifest
    assert info["bytes"] == (tmp_path / "m.fewbit").stat().st_size
    layers = manifest["architecture"]["layers"]
    assert [layer["op"] for layer in layers] == ["conv2d", "batchnorm", "relu", "maxpool2d"] * 4 + ["flatten"]
    assert all(layer["bias"] is None for layer in layers if layer["op"] == "conv2d")
    assert manifest["adaptation"]["method"] == "prototypes" and manifest["preprocessing"]["image_size"] == 28


@pytest.mark.parametrize(("spec", "limit"), [("quant:w4", 60_000), ("quant:w4a8", 60_000)])
def test_conv4_4bit_fits_the_target(spec: str, limit: int, tmp_path: Path) -> None:
    assert export(compressed_conv4(spec, ways=0), tmp_path / "m.fewbit")["bytes"] <= limit


def test_conv4_2bit_with_75_percent_of_weights_removed_fits_15kb(tmp_path: Path) -> None:
    from fewbit.compress import compress_, slim
    from fewbit.models import conv4

    torch.manual_seed(0)
    model = compress_(conv4(ways=0), "prune:channel:0.5@features.*")
    model = compress_(slim(model), "quant:w2")
    assert export(model, tmp_path / "m.fewbit")["bytes"] <= 15_000


@pytest.mark.parametrize("spec", ["prune:0.75,quant:w2", "prune:0.75,quant:w2a8"])
def test_conv4_2bit_75_percent_unstructured_sparse_is_a_twentieth_of_float32(spec: str, tmp_path: Path) -> None:
    """Rice-coded masks: 0.82 bit a weight for the mask (its entropy is 0.81) instead of a 1-bit bitmap."""
    info = export(compressed_conv4(spec, ways=0), tmp_path / "m.fewbit", algorithm="protonet")
    assert info["bytes"] * 20 <= info["float32_bytes"]
    rows = inspect_artifact(tmp_path / "m.fewbit")["layers"]
    assert {r["mask_format"] for r in rows if r["kind"] == "conv2d"} == {"rice"}


SPECS = ["quant:w4a8", "prune:0.5,quant:w2", "cluster:16", "prune:0.9,quant:w8:asym"]  # 90%: an index list


@pytest.mark.parametrize("spec", SPECS)
def test_payload_is_what_size_report_counts(spec: str, tmp_path: Path) -> None:
    """The payload holds exactly the packed containers (activation parameters live in the manifest)."""
    from fewbit.compress import size_report

    model = compressed_mlp(spec, ways=5)
    export(model, tmp_path / "m.fewbit", algorithm="maml")
    payload = read_artifact(tmp_path / "m.fewbit").manifest["payload"]["length"]
    act_layers = sum(1 for layer in size_report(model).layers if layer.act_bits)
    assert payload == size_report(model).bytes - 5 * act_layers


def test_a_converted_model_exports_the_same_bytes(tmp_path: Path) -> None:
    from fewbit.compress import convert

    model = compressed_conv4("prune:0.5,quant:w3a8", ways=5)
    export(model, tmp_path / "a.fewbit", algorithm="maml")
    export(convert(model), tmp_path / "b.fewbit", algorithm="maml")
    a, b = read_artifact(tmp_path / "a.fewbit"), read_artifact(tmp_path / "b.fewbit")
    assert a.manifest["payload"]["sha256"] == b.manifest["payload"]["sha256"]


def test_unsupported_layers_are_named(tmp_path: Path) -> None:
    from fewbit.models import Backbone

    odd = Backbone(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten()), 4 * 26 * 26,
                   5, "odd")
    with pytest.raises(ConfigError, match=r"layer features\.1 \(Tanh\) has no artifact form"):
        export(odd, tmp_path / "m.fewbit")
    with pytest.raises(ConfigError, match="Backbone"):
        export(torch.nn.Linear(3, 3), tmp_path / "m.fewbit")
    with pytest.raises(ConfigError, match="format"):
        export(compressed_mlp(None), tmp_path / "m.bin", format="tflite")


def test_inspect_reports_each_layer(tmp_path: Path) -> None:
    export(compressed_conv4("prune:0.75,quant:w2a8", ways=5), tmp_path / "m.fewbit", algorithm="maml")
    info = inspect_artifact(tmp_path / "m.fewbit")
    rows = {r["name"]: r for r in info["layers"]}
    assert rows["features.1.0"]["bits"] == 2 and rows["features.1.0"]["act_bits"] == 8
    assert rows["features.1.0"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert rows["features.1.0"]["mask_format"] == "rice"  # 75% sparse: Rice-coded gaps beat a bitmap
    assert rows["features.1.1"]["kind"] == "batchnorm" and rows["head"]["kind"] == "linear"
    assert sum(r["bytes"] for r in info["layers"]) == info["payload_bytes"]
    assert np.isclose(info["ratio"], info["float32_bytes"] / info["bytes"])
