"""The runtime's layers: integer arithmetic, the fused conv block, backward passes, re-quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.artifact.tensor import PackedTensor
from fewbit.deploy import export
from fewbit.runtime.ops import InputQuant, Weight
from fewbit.runtime.requant import requantize
from tests.deploy.helpers import compressed_conv1d, compressed_conv4, glyphs, series, series_preprocessing


def test_integer_path_equals_int32_accumulation() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(-8, 8, (16, 576))
    scales = rng.random(16).astype(np.float32)
    weight = Weight(PackedTensor.from_codes(codes, 4, scale=scales, axis=0))
    act = InputQuant({"bits": 8, "scale": 0.02, "zero_point": 7, "qmin": 0, "qmax": 255})
    x = rng.random((50, 576)).astype(np.float32) * 5
    q, _, scale = act.integers(x)
    exact = (q.astype(np.int64) @ codes.T.astype(np.int64)).astype(np.int32)  # what int32 hardware gives
    assert weight.codes_t.dtype == np.int8  # the resident body: one byte a weight
    got = weight.product(q, weight.matrix_t(integer=True), act, scale)
    np.testing.assert_array_equal(got, exact.astype(np.float32) * (scale * weight.row_scale))
    assert np.all(q == np.rint(q)) and q.min() >= -7 and q.max() <= 248


def test_wide_accumulations_fall_back_to_float64() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(-128, 128, (4, 4096))  # 4096 * 255 * 128 > 2**24: float32 would round
    weight = Weight(PackedTensor.from_codes(codes, 8, scale=np.ones(4, np.float32), axis=0))
    act = InputQuant({"bits": 8, "scale": 1.0, "zero_point": 0, "qmin": 0, "qmax": 255})
    q = rng.integers(0, 256, (3, 4096)).astype(np.float32)
    exact = q.astype(np.int64) @ codes.T
    got = weight.product(q, weight.matrix_t(integer=True), act, np.float32(1))
    np.testing.assert_array_equal(got, exact.astype(np.float32))


@pytest.mark.parametrize("spec", [None, "quant:w4a8"])
def test_fused_conv_block_equals_the_layer_by_layer_path(spec: str | None, tmp_path: Path) -> None:
    export(compressed_conv4(spec, ways=0, width=32), tmp_path / "m.fewbit")  # 9 columns vs 32 outputs
    model = rt.load(tmp_path / "m.fewbit")
    x, _ = glyphs(6, 4, seed=2)
    with torch.no_grad():  # a negative BatchNorm scale makes the fused block pool minima
        model.params[next(n for n in model.params if n.endswith("1.weight"))][::3] *= -1
    fused = model.run_layers(model.to_nhwc(x), None, 0, model.embedding_layers)
    plain = model.run_layers(model.to_nhwc(x), None, 0, model.embedding_layers, ctxs=[])
    # float activations: float32 rounding only; 8-bit ones: a rounding difference may flip a code
    tol = 1e-4 if spec is None else 0.05
    np.testing.assert_allclose(fused, plain, rtol=tol, atol=tol * np.abs(plain).max())


@pytest.mark.parametrize("spec", [None, "quant:w4a8"])
def test_fused_conv1d_block_equals_the_layer_by_layer_path(spec: str | None, tmp_path: Path) -> None:
    """`1 x 3` kernels padded `[0, 1]` and `1 x 2` pools: the fused block's windows are rectangles."""
    export(compressed_conv1d(spec, ways=0, width=16), tmp_path / "m.fewbit", preprocessing=series_preprocessing())
    model = rt.load(tmp_path / "m.fewbit")
    x, _ = series(6, 4, seed=2)
    model.params[next(n for n in model.params if n.endswith("1.weight"))][::3] *= -1  # the fused block pools minima
    fused = model.run_layers(model.to_nhwc(x), None, 0, model.embedding_layers)
    plain = model.run_layers(model.to_nhwc(x), None, 0, model.embedding_layers, ctxs=[])
    tol = 1e-4 if spec is None else 0.05
    np.testing.assert_allclose(fused, plain, rtol=tol, atol=tol * np.abs(plain).max())


def test_square_sizes_read_alike_as_an_integer_or_as_height_width(tmp_path: Path) -> None:
    """`"padding": 1` and `[1, 1]`, `"kernel": 2` and `[2, 2]` are one model (fewbit writes the integer)."""
    from fewbit.artifact.format import encode_artifact
    from fewbit.deploy.torch_export import artifact_from_model

    manifest, tensors = artifact_from_model(compressed_conv4("quant:w4", ways=0, width=8))
    layers = manifest["architecture"]["layers"]
    assert {la["padding"] for la in layers if la["op"] == "conv2d"} == {1}
    assert {la["kernel"] for la in layers if la["op"] == "maxpool2d"} == {2}
    x, _ = glyphs(3, 2, seed=5)
    square = rt.load(encode_artifact(manifest, tensors)).embed(x)
    for layer in layers:
        if layer["op"] == "conv2d":
            layer["padding"] = [1, 1]
        elif layer["op"] == "maxpool2d":
            layer["kernel"], layer["stride"] = [2, 2], [2, 2]
    np.testing.assert_array_equal(rt.load(encode_artifact(manifest, tensors)).embed(x), square)


def _head_norm_sgd(model: torch.nn.Module, x: np.ndarray, y: np.ndarray,
                   qx: np.ndarray) -> tuple[list[str], dict[str, torch.Tensor], np.ndarray]:
    """By hand with autograd: 3 SGD steps (lr 0.1) on the head and the BatchNorm parameters, each
    projected back on the compression grid as fewbit.meta does; (the norms' names, the adapted
    parameters, the logits of `qx`)."""
    from torch.func import functional_call

    from fewbit.compress import project_params

    norms = [n for n, _ in model.named_parameters() if n.startswith("features.") and n.split(".")[2] == "1"]
    names = ["head.weight", "head.bias", *norms]
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        fast = {n: params[n].requires_grad_() for n in names}
        out = functional_call(model, {**params, **fast}, (torch.from_numpy(x),))
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
        grads = torch.autograd.grad(loss, list(fast.values()))
        params.update({n: (fast[n] - 0.1 * g).detach() for n, g in zip(names, grads)})
        params = project_params(model, params)
    with torch.no_grad():
        ref = functional_call(model, params, (torch.from_numpy(qx),)).numpy()
    return norms, params, ref


def _check_head_norm_adaptation(model: torch.nn.Module, tmp_path: Path, x: np.ndarray, y: np.ndarray,
                                qx: np.ndarray, preprocessing: dict | None = None) -> None:
    """The numpy runtime's 3-step head + BatchNorm adaptation of `model`'s artifact equals `_head_norm_sgd`:
    the adapted norms and the query logits."""
    adaptation = {"scope": "head+norm", "steps": 3, "lr": 0.1, "embed": "separate", "head_init": "own"}
    export(model, tmp_path / "m.fewbit", algorithm="maml", adaptation=adaptation, preprocessing=preprocessing)
    runtime = rt.load(tmp_path / "m.fewbit")
    with torch.no_grad():
        model.head.weight.copy_(model.head.compress_weight(model.head.weight))
    norms, params, ref = _head_norm_sgd(model, x, y, qx)
    adapted = rt.adapt(runtime, x, y)
    for name in norms:
        np.testing.assert_allclose(adapted.params[name], params[name].numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(adapted.logits(qx), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_backward_through_conv1d_batchnorm_pool_matches_autograd(tmp_path: Path) -> None:
    """Norm + head adaptation of a 1-D Conv-4: gradients through rectangular padding and pooling."""
    model = compressed_conv1d("quant:w4", ways=4, width=8)
    x, y = series(4, 3, seed=3)
    qx, _ = series(4, 2, seed=4)
    _check_head_norm_adaptation(model, tmp_path, x, y, qx, preprocessing=series_preprocessing())


def test_backward_through_conv_batchnorm_pool_matches_autograd(tmp_path: Path) -> None:
    """Norm + head adaptation of a Conv-4 (gradients through conv, BatchNorm, ReLU, max-pool)."""
    torch.manual_seed(0)
    model = compressed_conv4("quant:w4", ways=4, width=8)
    x, y = glyphs(4, 3, seed=3)
    qx, _ = glyphs(4, 2, seed=4)
    _check_head_norm_adaptation(model, tmp_path, x, y, qx)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("options", ["", ":asym", ":per_tensor", ":percentile", ":mse:asym"])
def test_requantize_matches_the_pytorch_quantizer(bits: int, options: str) -> None:
    from fewbit.compress import compress_
    from fewbit.compress.convert import pack_layer
    from fewbit.deploy.torch_export import _weight_rule

    if bits == 1 and "asym" in options:
        pytest.skip("1-bit is sign x scale, symmetric only")
    torch.manual_seed(bits)
    layer = compress_(torch.nn.Sequential(torch.nn.Linear(40, 6)), f"quant:w{bits}{options}")[0]
    stored = pack_layer(layer).packed_weight
    moved = torch.randn(6, 40)
    with torch.no_grad():
        ref = layer.compress_weight(moved).numpy()
    got = requantize(moved.numpy(), _weight_rule(layer), stored)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
