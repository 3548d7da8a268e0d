"""ONNX export (QDQ) run in onnxruntime against the PyTorch compressed model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewbit.deploy import export
from tests.deploy.helpers import (
    compressed_conv1d,
    compressed_conv4,
    compressed_mlp,
    fit_head_to_glyphs,
    series,
    series_preprocessing,
)

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _session(path: Path) -> object:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )  # run the QDQ graph as written
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("spec", "tol"),
    [
        ("quant:w4", 1e-4),
        ("prune:0.75,quant:w2", 1e-4),
        ("cluster:16", 1e-4),
        ("quant:w4a8", 0.05),
        ("quant:w3a4:asym", 0.05),
    ],
)
def test_onnx_matches_pytorch(spec: str, tol: float, tmp_path: Path) -> None:
    model = compressed_conv4(spec, ways=5)
    x, _ = fit_head_to_glyphs(model, 5, queries=20)
    path = tmp_path / "m.onnx"
    info = export(model, path, format="onnx", algorithm="maml")
    assert info["format"] == "onnx" and path.stat().st_size == info["bytes"]
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    assert "ReduceMean" in ops and "BatchNormalization" not in ops
    assert ("Gather" if spec.startswith("cluster") else "DequantizeLinear") in ops
    if "a8" in spec:
        assert "QuantizeLinear" in ops
    logits, embedding = _session(path).run(["logits", "embedding"], {"x": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        ref_embedding = model(torch.from_numpy(x), embed=True).numpy()
    assert np.abs(logits - ref).max() <= tol * np.abs(ref).max()
    assert np.abs(embedding - ref_embedding).max() <= tol * np.abs(ref_embedding).max()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize(("spec", "tol"), [(None, 1e-4), ("cluster:16", 1e-4), ("quant:w4a8:lsq", 0.05)])
def test_onnx_conv1d_matches_the_numpy_runtime(spec: str | None, tol: float, tmp_path: Path) -> None:
    """Rectangular pads (`[0, 1, 0, 1]`) and pooling windows (`1 x 2`) in ONNX, against the numpy runtime."""
    import fewbit.runtime as rt

    model = compressed_conv1d(spec, ways=5)
    export(model, tmp_path / "m.onnx", format="onnx", algorithm="maml", preprocessing=series_preprocessing())
    export(model, tmp_path / "m.fewbit", algorithm="maml", preprocessing=series_preprocessing())
    nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
    attrs = [{a.name: list(a.ints) for a in n.attribute} for n in nodes if n.op_type in ("Conv", "MaxPool")]
    assert {str(a["pads"]) for a in attrs if "pads" in a} == {"[0, 1, 0, 1]"}
    assert {str(a["kernel_shape"]) for a in attrs if "pads" not in a} == {"[1, 2]"}
    x, _ = series(5, 20, seed=7)
    logits, embedding = _session(tmp_path / "m.onnx").run(["logits", "embedding"], {"x": x})
    runtime = rt.load(tmp_path / "m.fewbit")
    ref_embedding, ref = runtime.embed(x), runtime.logits(x)
    assert np.abs(embedding - ref_embedding).max() <= tol * np.abs(ref_embedding).max()
    assert np.abs(logits - ref).max() <= tol * np.abs(ref).max()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_onnx_mlp_with_dynamic_activations_and_no_head(tmp_path: Path) -> None:
    from fewbit.compress import compress_
    from fewbit.models import mlp

    torch.manual_seed(0)
    model = compress_(mlp(ways=0, in_features=784, hidden=(64, 32)), "quant:w4a8").eval()  # uncalibrated
    path = tmp_path / "m.onnx"
    export(model, path, format="onnx")
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    sess = _session(path)
    assert [o.name for o in sess.get_outputs()] == ["embedding"]
    (embedding,) = sess.run(None, {"x": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x), embed=True).numpy()
    assert np.abs(embedding - ref).max() <= 0.05 * np.abs(ref).max()


def test_onnx_carries_the_manifest(tmp_path: Path) -> None:
    import json

    path = tmp_path / "m.onnx"
    export(compressed_mlp("quant:w4"), path, format="onnx", algorithm="protonet")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    manifest = json.loads(props["fewbit.manifest"])
    assert manifest["algorithm"] == "protonet" and manifest["preprocessing"]["image_size"] == 28
