"""The numpy runtime against the PyTorch compressed model it was exported from.

Stated tolerances: with float activations the logits agree to 1e-4 (float32 summation order);
with 8-bit activations a conv output that lands on a rounding boundary may pick the next code
in one implementation and not the other, so logits agree to 5% of their range and predictions
on >= 99.5% of 1,000 queries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fewbit.runtime as rt
from fewbit.data.task import Task
from fewbit.deploy import export
from fewbit.meta import MetaConfig, build_algorithm, meta_config
from tests.deploy.helpers import (
    compressed_conv1d,
    compressed_conv4,
    compressed_mlp,
    fit_head_to_glyphs,
    glyphs,
    series,
    series_preprocessing,
)

FLOAT_TOL = 1e-4
ACT_QUANT_TOL = 0.05


def _export(model: torch.nn.Module, tmp_path: Path, **kw: object) -> rt.RuntimeModel:
    path = tmp_path / "m.fewbit"
    export(model, path, **kw)  # type: ignore[arg-type]
    return rt.load(path)


@pytest.mark.parametrize(
    ("spec", "queries", "tol", "min_agree"),
    [
        ("quant:w4a8", 1000, ACT_QUANT_TOL, 0.995),
        ("prune:0.75,quant:w2", 300, FLOAT_TOL, 0.995),
        (None, 200, FLOAT_TOL, 0.995),
        ("quant:w4", 200, FLOAT_TOL, 0.995),
        # 2-bit weights with 8-bit activations are the most fragile: a float32 rounding difference in
        # PyTorch's convolution flips an activation code now and then, and the flips compound.
        ("prune:0.5,quant:w2a8:asym", 200, ACT_QUANT_TOL, 0.985),
    ],
)
def test_logits_and_predictions(
    spec: str | None, queries: int, tol: float, min_agree: float, tmp_path: Path
) -> None:
    model = compressed_conv4(spec, ways=10)
    x, _ = fit_head_to_glyphs(model, 10, queries=queries // 10)  # classified in batches of 100
    runtime = _export(model, tmp_path, algorithm="maml")
    agree, worst = 0, 0.0
    for batch in np.split(x[np.random.default_rng(0).permutation(len(x))], queries // 100):
        with torch.no_grad():
            ref = model(torch.from_numpy(batch)).numpy()
        out = runtime.logits(batch)
        worst = max(worst, float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-12)))
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
    assert agree >= min_agree * queries, f"{agree}/{queries} predictions agree"
    assert worst <= tol, f"relative logit error {worst:.2e}"


CONV1D_SPECS = [  # (spec, tolerance relative to the largest embedding value)
    ("quant:w4a8:lsq", ACT_QUANT_TOL),
    ("prune:0.75,quant:w2a8:lsq", ACT_QUANT_TOL),  # 75% sparse, Rice-coded masks
    ("prune:2:4@features.[123].*,quant:w4a8", ACT_QUANT_TOL),  # N:M (the first layer's 9 inputs do not divide)
    ("slim:quant:w2a8", ACT_QUANT_TOL),  # half the channels pruned and slimmed away
    ("cluster:16", FLOAT_TOL),
    (None, FLOAT_TOL),  # float32
]


@pytest.mark.parametrize(("spec", "tol"), CONV1D_SPECS)
def test_conv1d_embeddings_match_pytorch(spec: str | None, tol: float, tmp_path: Path) -> None:
    """The 1-D Conv-4 (`1 x 3` kernels padded `[0, 1]`, `1 x 2` pools): rectangular padding and
    pooling through the artifact and the numpy runtime, batch statistics as PyTorch takes them."""
    model = compressed_conv1d(spec, ways=0)
    runtime = _export(model, tmp_path, algorithm="protonet", preprocessing=series_preprocessing())
    layers = runtime.manifest["architecture"]["layers"]
    assert {str(la.get("padding")) for la in layers if la["op"] == "conv2d"} == {"[0, 1]"}
    assert {str(la["kernel"]) for la in layers if la["op"] == "maxpool2d"} == {"[1, 2]"}
    x, _ = series(10, 10, seed=3)  # 100 series of 3 channels x 128 steps
    with torch.no_grad():
        ref = model(torch.from_numpy(x), embed=True).numpy()
    out = runtime.embed(x)
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()


def test_mlp_with_dynamic_activation_quantization(tmp_path: Path) -> None:
    from fewbit.compress import compress_

    torch.manual_seed(0)
    from fewbit.models import mlp

    model = compress_(mlp(ways=5, in_features=784, hidden=(64, 32)), "quant:w4a8").eval()  # never calibrated
    runtime = _export(model, tmp_path, algorithm="maml")
    x, _ = glyphs(10, 10, seed=4)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = runtime.logits(x)
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert np.abs(out - ref).max() <= ACT_QUANT_TOL * np.abs(ref).max()


def _task(ways: int, shots: int, queries: int, seed: int) -> tuple[np.ndarray, ...]:
    x, y = glyphs(ways, shots + queries, seed=seed)
    support = np.concatenate(
        [np.arange(c * (shots + queries), c * (shots + queries) + shots) for c in range(ways)]
    )
    query = np.setdiff1d(np.arange(len(y)), support)
    return x[support], y[support], x[query], y[query]


def _torch_predict(model: torch.nn.Module, config: MetaConfig, sx, sy, qx, qy) -> np.ndarray:  # noqa: ANN001
    algo = build_algorithm(config)
    task = Task(*(torch.from_numpy(a).unsqueeze(0) for a in (sx, sy, qx, qy)), ways=int(sy.max()) + 1)
    params = dict(model.named_parameters())
    return algo.predict(model, params, task, {}).squeeze(0).detach().numpy()


@pytest.mark.parametrize(("spec", "tasks"), [("quant:w4a8", 8), ("quant:w4", 2)])
def test_protonet_matches_fewbit_meta(spec: str, tasks: int, tmp_path: Path) -> None:
    model = compressed_conv4(spec, ways=0)
    runtime = _export(model, tmp_path, algorithm="protonet")
    agree = total = 0
    for seed in range(tasks):  # 8 tasks x 5-way x 25 queries = 1,000 queries
        sx, sy, qx, qy = _task(5, 1, 25, seed)
        ref = _torch_predict(model, MetaConfig(algorithm="protonet"), sx, sy, qx, qy)
        out = rt.adapt(model=runtime, support_x=sx, support_y=sy).logits(qx)
        tol = FLOAT_TOL if "a" not in spec.split(":")[1] else ACT_QUANT_TOL
        assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
        total += len(qy)
    assert agree / total >= 0.995


def _torch_sgd(model: torch.nn.Module, names: list[str], sx, sy, qx, *, steps: int, lr: float) -> np.ndarray:  # noqa: ANN001
    """What the compressed PyTorch model computes when `names` take SGD steps on the support batch,
    each step followed by the projection onto the compressed values (as in fewbit.meta's inner loop)."""
    from torch.func import functional_call

    from fewbit.compress import project_params

    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.from_numpy(sx), torch.from_numpy(sy)
    for _ in range(steps):
        fast = {n: params[n].requires_grad_() for n in names}
        loss = torch.nn.functional.cross_entropy(functional_call(model, {**params, **fast}, (x,)), y)
        grads = torch.autograd.grad(loss, list(fast.values()))
        params.update({n: (fast[n] - lr * g).detach() for n, g in zip(names, grads)})
        params = project_params(model, params)
    with torch.no_grad():
        return functional_call(model, params, (torch.from_numpy(qx),)).numpy()


@pytest.mark.parametrize("spec", [None, "quant:w4a8", "prune:0.5,quant:w2:asym:mse"])
def test_head_sgd_matches_the_compressed_torch_layer(spec: str | None, tmp_path: Path) -> None:
    """SGD on a (compressed) head: re-quantized on use, gradients straight through, as the layer does."""
    model = compressed_conv4(spec, ways=5)
    if spec:
        with torch.no_grad():  # the artifact stores the quantized head: start PyTorch from it too
            model.head.weight.copy_(model.head.compress_weight(model.head.weight))
    runtime = _export(model, tmp_path, algorithm="maml", adaptation={"steps": 4, "lr": 0.05, "scope": "head"})
    sx, sy, qx, _ = _task(5, 2, 10, seed=5)
    adapted = rt.adapt(runtime, sx, sy)
    out = adapted.logits(qx)
    ref = _torch_sgd(model, ["head.weight", "head.bias"], sx, sy, qx, steps=4, lr=0.05)
    assert len(adapted.losses) == 4 and adapted.losses[-1] < adapted.losses[0]
    tol = FLOAT_TOL if spec is None or "a8" not in spec else ACT_QUANT_TOL
    assert np.abs(out - ref).max() <= tol * max(1.0, np.abs(ref).max())
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("spec", [None, "quant:w4a8:lsq"])
def test_conv1d_head_sgd_matches_the_compressed_torch_layer(spec: str | None, tmp_path: Path) -> None:
    """SGD on the head of a 1-D Conv-4 (the runtime's `sgd` adaptation) against PyTorch's steps."""
    model = compressed_conv1d(spec, ways=5)
    if spec:
        with torch.no_grad():  # the artifact stores the quantized head: start PyTorch from it too
            model.head.weight.copy_(model.head.compress_weight(model.head.weight))
    runtime = _export(model, tmp_path, algorithm="maml", preprocessing=series_preprocessing(),
                      adaptation={"steps": 4, "lr": 0.05, "scope": "head"})
    sx, sy = series(5, 2, seed=5)
    qx, _ = series(5, 10, seed=6)
    adapted = rt.adapt(runtime, sx, sy)
    out = adapted.logits(qx)
    ref = _torch_sgd(model, ["head.weight", "head.bias"], sx, sy, qx, steps=4, lr=0.05)
    assert len(adapted.losses) == 4 and adapted.losses[-1] < adapted.losses[0]
    tol = FLOAT_TOL if spec is None else ACT_QUANT_TOL
    assert np.abs(out - ref).max() <= tol * max(1.0, np.abs(ref).max())
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_anil_matches_fewbit_meta(tmp_path: Path) -> None:
    model = compressed_conv4(None, ways=5)
    config = MetaConfig(algorithm="anil", scope="head", inner_steps=3, inner_lr=0.05)
    runtime = _export(model, tmp_path, algorithm="anil", meta=config)
    assert runtime.adaptation["steps"] == 3 and runtime.adaptation["scope"] == "head"
    sx, sy, qx, qy = _task(5, 2, 10, seed=5)
    np.testing.assert_allclose(
        rt.adapt(runtime, sx, sy).logits(qx),
        _torch_predict(model, config, sx, sy, qx, qy),
        rtol=1e-3,
        atol=1e-4,
    )


def test_bias_norm_adaptation_through_the_packed_body_matches_fewbit_meta(tmp_path: Path) -> None:
    """Backprop through quantized layers (input quantization, packed weights) to biases and norms."""
    model = compressed_mlp("quant:w4a8", ways=5)
    config = MetaConfig(algorithm="maml", scope="bias_norm", inner_steps=3, inner_lr=0.1)
    runtime = _export(model, tmp_path, algorithm="maml", meta=config)
    assert runtime.adaptation["scope"] == "bias+norm"
    sx, sy, qx, qy = _task(5, 2, 10, seed=5)
    ref = _torch_predict(model, config, sx, sy, qx, qy)
    adapted = rt.adapt(runtime, sx, sy)
    assert adapted.losses[-1] < adapted.losses[0]
    out = adapted.logits(qx)
    assert np.abs(out - ref).max() <= ACT_QUANT_TOL * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_baseline_finetune_matches_fewbit_meta(tmp_path: Path) -> None:
    model = compressed_conv4("quant:w4", ways=20)
    config = meta_config("finetune", finetune_steps=10, finetune_lr=0.1)
    runtime = _export(model, tmp_path, algorithm="finetune", meta=config)
    sx, sy, qx, qy = _task(5, 1, 5, seed=6)
    ref = _torch_predict(model, config, sx, sy, qx, qy)
    out = rt.adapt(runtime, sx, sy).logits(qx)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_adaptation_learns_the_task(tmp_path: Path) -> None:
    runtime = _export(compressed_conv4("quant:w4", ways=0), tmp_path, algorithm="protonet")
    sx, sy, qx, qy = _task(5, 5, 10, seed=7)
    assert (rt.adapt(runtime, sx, sy).predict(qx) == qy).mean() >= 0.8
    tuned = rt.adapt(runtime, sx, sy, method="sgd", steps=5, lr=0.01)
    assert (tuned.predict(qx) == qy).mean() >= 0.8


def test_bad_support_sets_and_scopes(tmp_path: Path) -> None:
    runtime = _export(compressed_conv4("quant:w4", ways=0), tmp_path, algorithm="protonet")
    sx, sy, _, _ = _task(3, 1, 1, seed=8)
    with pytest.raises(ValueError, match="two classes"):
        rt.adapt(runtime, sx[:1], sy[:1])
    with pytest.raises(ValueError, match="labels"):
        rt.adapt(runtime, sx, sy[:2])
    with pytest.raises(ValueError, match="allows adapting"):
        rt.adapt(runtime, sx, sy, method="sgd", scope="head+norm")
    with pytest.raises(ValueError, match="expected input"):
        runtime.embed(np.zeros((2, 1, 14, 14), np.float32))


@pytest.mark.parametrize("scope", ["head", "bias_norm"])
def test_metasgd_artifacts_adapt_with_the_learned_rates(scope: str, tmp_path: Path) -> None:
    """Meta-SGD's per-parameter rates travel in the artifact; the runtime used to adapt with the
    scalar inner_lr instead, which is not what was meta-learned."""
    model = compressed_mlp("quant:w4", ways=5)
    with torch.no_grad():  # the artifact stores the quantized head: start PyTorch from it too
        model.head.weight.copy_(model.head.compress_weight(model.head.weight))
    config = MetaConfig(algorithm="metasgd", scope=scope, inner_steps=3, inner_lr=0.1)
    algo = build_algorithm(config, model=model)
    extras = algo.extra_parameters(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rate in extras.values():  # learned rates differ from the initial scalar, entry by entry
            rate.copy_(torch.rand(rate.shape, generator=gen) * 0.3)
    export(model, tmp_path / "m.fewbit", algorithm=algo, extras=extras)
    runtime = rt.load(tmp_path / "m.fewbit")
    assert runtime.rates and set(runtime.rates) <= {n.removeprefix("inner_lr.") for n in extras}
    sx, sy, qx, qy = _task(5, 2, 10, seed=8)
    task = Task(*(torch.from_numpy(a)[None] for a in (sx, sy, qx, qy)), ways=5)
    ref = algo.predict(model, dict(model.named_parameters()), task, dict(extras))[0].numpy()
    out = rt.adapt(runtime, sx, sy).logits(qx)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    scalar = rt.adapt(runtime, sx, sy, lr=0.1).logits(qx)  # a rate given for this adaptation replaces them
    assert np.abs(scalar - ref).max() > 1e-2 * np.abs(ref).max()


def test_exported_adaptation_settings_come_from_the_algorithm(tmp_path: Path) -> None:
    """Without a MetaConfig the exporter used its own defaults (5 steps) while MetaConfig says 1."""
    export(compressed_mlp(None, ways=5), tmp_path / "m.fewbit", algorithm="maml")
    block = rt.load(tmp_path / "m.fewbit").adaptation
    default = MetaConfig(algorithm="maml")
    assert block["steps"] == default.test_inner_steps and block["lr"] == default.inner_lr
    assert block["scope"] == "head+bias+norm"  # scope all: everything the runtime moves


@pytest.mark.parametrize("name", ["metabaseline", "simpleshot"])
def test_metric_algorithms_deploy_as_the_runtime_prototypes(name: str, tmp_path: Path) -> None:
    """Meta-Baseline's scaled cosine and SimpleShot's centred, unit-length nearest mean, as the artifact says."""
    model = compressed_conv4("quant:w4", ways=0)
    algo = build_algorithm(meta_config(name, cosine_scale=12.0), model=model)
    extras = algo.extra_parameters(model)
    export(model, tmp_path / "m.fewbit", algorithm=algo, extras=extras)
    runtime = rt.load(tmp_path / "m.fewbit")
    assert runtime.adaptation["method"] == "prototypes" and runtime.ways == 0
    for seed in range(3):
        sx, sy, qx, qy = _task(5, 1, 10, seed=20 + seed)
        task = Task(*(torch.from_numpy(a)[None] for a in (sx, sy, qx, qy)), ways=5)
        ref = algo.predict(model, dict(model.named_parameters()), task, dict(extras))[0].numpy()
        out = rt.adapt(runtime, sx, sy).logits(qx)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_lslr_per_step_rates_travel_in_the_artifact(tmp_path: Path) -> None:
    model = compressed_mlp(None, ways=5)
    config = meta_config("maml", scope="head", inner_steps=3, inner_lr=0.1, lslr=True)
    algo = build_algorithm(config, model=model)
    extras = algo.extra_parameters(model)
    with torch.no_grad():
        for rate in extras.values():
            rate.copy_(torch.tensor([0.3, 0.05, 0.2]))
    export(model, tmp_path / "m.fewbit", algorithm=algo, extras=extras)
    runtime = rt.load(tmp_path / "m.fewbit")
    assert set(runtime.step_rates) == {"head.weight", "head.bias"}
    sx, sy, qx, qy = _task(5, 2, 10, seed=9)
    task = Task(*(torch.from_numpy(a)[None] for a in (sx, sy, qx, qy)), ways=5)
    ref = algo.predict(model, dict(model.named_parameters()), task, dict(extras))[0].numpy()
    np.testing.assert_allclose(rt.adapt(runtime, sx, sy).logits(qx), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
