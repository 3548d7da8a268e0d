"""ResNet-12 (residual stages) exported to `.fewbit` and ONNX, against the PyTorch model, on RGB inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.deploy import export, read_artifact
from fewbit.models import resnet12

FLOAT_TOL = 1e-4
ACT_QUANT_TOL = 0.05
PRE = {"image_size": 32, "channels": 3, "invert": False, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
       "resize": "crop"}


def _model(spec: str | None, seed: int = 0) -> tuple[torch.nn.Module, np.ndarray]:
    from fewbit.compress import calibrate, compress_

    torch.manual_seed(seed)
    model = resnet12(ways=5, in_channels=3, image_size=32, channels=(8, 16, 16, 32))
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    if spec:
        compress_(model, spec)
        calibrate(model, [x[:20]])
    return model.eval(), x[20:].numpy()


@pytest.mark.parametrize(
    ("spec", "tol"), [(None, FLOAT_TOL), ("prune:0.5,quant:w2", FLOAT_TOL), ("quant:w4", FLOAT_TOL),
                      ("quant:w4a8", ACT_QUANT_TOL)]
)
def test_runtime_matches_pytorch(spec: str | None, tol: float, tmp_path: Path) -> None:
    model, x = _model(spec)
    export(model, tmp_path / "r.fewbit", algorithm="maml", preprocessing=PRE)
    runtime = rt.load(tmp_path / "r.fewbit")
    with torch.no_grad():
        ref_z = model(torch.from_numpy(x), embed=True).numpy()
        ref = model(torch.from_numpy(x)).numpy()
    z, logits = runtime.embed(x), runtime.logits(x)
    assert np.abs(z - ref_z).max() <= tol * np.abs(ref_z).max()
    assert np.abs(logits - ref).max() <= tol * np.abs(ref).max()
    ops = [layer["op"] for layer in read_artifact(tmp_path / "r.fewbit").manifest["architecture"]["layers"]]
    assert ops.count("residual") == 4 and "global_avgpool" in ops and runtime.input_shape == (3, 32, 32)


def test_adapting_biases_and_norms_through_the_residual_stages(tmp_path: Path) -> None:
    from fewbit.data.task import Task
    from fewbit.meta import MetaConfig, build_algorithm

    model, x = _model(None)
    y = np.repeat(np.arange(5), 4)
    config = MetaConfig(algorithm="maml", inner_steps=2, inner_lr=0.05, scope="bias_norm")
    export(model, tmp_path / "r.fewbit", algorithm="maml", preprocessing=PRE, meta=config)
    runtime = rt.load(tmp_path / "r.fewbit")
    assert runtime.adaptation["scope"] == "bias+norm"
    adapted = rt.adapt(runtime, x, y)
    assert adapted.losses[-1] < adapted.losses[0]
    algo = build_algorithm(config)
    task = Task(torch.from_numpy(x)[None], torch.from_numpy(y)[None], torch.from_numpy(x)[None],
                torch.from_numpy(y)[None], 5)
    ref = algo.predict(model, dict(model.named_parameters()), task)[0].numpy()
    out = adapted.logits(x)
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()


def test_onnx_matches_pytorch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    for spec, tol in ((None, FLOAT_TOL), ("quant:w4a8", ACT_QUANT_TOL)):
        model, x = _model(spec)
        export(model, tmp_path / "r.onnx", algorithm="maml", preprocessing=PRE, format="onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(tmp_path / "r.onnx"), options, providers=["CPUExecutionProvider"])
        logits, embedding = session.run(["logits", "embedding"], {"x": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(logits - ref).max() <= tol * np.abs(ref).max()
        assert embedding.shape == (20, 32)
