"""Compression inside meta-learning: what adapts is what ships (issue: compression-aware meta-learning)."""

import pytest
import torch
from torch.func import functional_call

from fewbit.compress import compress, compressed_layers, project_params
from fewbit.meta.functional import batched_forward, expand_params
from fewbit.meta.inner import inner_loop
from fewbit.models import build_backbone


def _distinct_per_channel(w: torch.Tensor) -> int:
    return max(len(torch.unique(row)) for row in w.detach().reshape(w.shape[0], -1))


@pytest.mark.parametrize("spec,bits", [("prune:0.5,quant:w4", 4), ("quant:w2", 2), ("cluster:8", 3)])
def test_fast_weights_stay_compressed_after_every_inner_step(spec, bits):
    torch.manual_seed(0)
    model = compress(build_backbone("conv4", ways=5), spec)
    masks = {n: m.cq_mask.mask.clone() for n, m in model.named_modules() if hasattr(m, "cq_mask")}
    params = {n: p for n, p in model.named_parameters()}
    x, y = torch.randn(10, 1, 28, 28), torch.arange(5).repeat(2)
    seen = []

    def project(fast):
        out = project_params(model, fast)
        seen.append(dict(out))  # the loop updates its dict in place on the next step
        return out

    def forward(p, inputs):
        return functional_call(model, p, (inputs,)).unsqueeze(0)

    inner_loop(forward, params, x, y.unsqueeze(0), steps=3, lr=0.5, project=project)
    assert len(seen) == 3
    layers = [n for n, _ in compressed_layers(model)]
    assert layers
    for fast in seen:
        for name in layers:
            w = fast[f"{name}.weight"]
            assert not torch.equal(w, params[f"{name}.weight"])  # it did adapt
            assert _distinct_per_channel(w) <= 2**bits  # on a 2^b-level grid (or codebook) per channel
            if name in masks:
                assert torch.all(w[masks[name] == 0] == 0)  # masks kept


@pytest.mark.slow
def test_compressed_meta_training_beats_compressed_random_init(tmp_path):
    from fewbit.evaluation import evaluate
    from fewbit.train import TrainConfig, meta_train
    from fewbit.train.run import eval_dataset
    from tests.conftest import make_omniglot_zip

    data = make_omniglot_zip(tmp_path / "bg.zip", alphabets=6, characters=8, drawings=20)
    config = TrainConfig.from_dict({
        "dataset": f"omniglot:{data}", "algorithm": "protonet", "ways": 5, "shots": 1, "queries": 5,
        "meta_batch": 2, "steps": 60, "outer_lr": 2e-3, "val_every": 0, "seed": 0, "device": "cpu",
        "compress": "quant:w4a8",
    })
    run = meta_train(config, tmp_path / "run", progress=False)
    test = eval_dataset(config.dataset, "test", config)
    trained = evaluate(run.predictor(), test, ways=5, shots=1, queries=5, tasks=60)
    torch.manual_seed(0)
    random_model = compress(build_backbone("conv4", ways=5), "quant:w4a8")

    def random_predict(task):
        return run.algorithm.predict(random_model, dict(random_model.named_parameters()), task, {}).detach()

    untrained = evaluate(random_predict, test, ways=5, shots=1, queries=5, tasks=60)
    assert trained.accuracy > untrained.accuracy


def test_training_and_loading_a_compressed_run_binds_the_projection(tmp_path):
    from fewbit.train import TrainConfig, load_run, meta_train
    from tests.conftest import make_omniglot_zip

    data = make_omniglot_zip(tmp_path / "bg.zip", alphabets=5, characters=6, drawings=20)
    config = TrainConfig.from_dict({
        "dataset": f"omniglot:{data}", "algorithm": "maml", "ways": 3, "shots": 1, "queries": 2,
        "meta_batch": 1, "steps": 1, "val_every": 0, "device": "cpu", "compress": "prune:0.5,quant:w4",
    })
    run = meta_train(config, tmp_path / "run", progress=False)
    assert run.algorithm.project is not None
    loaded = load_run(tmp_path / "run")
    assert loaded.algorithm.project is not None
    fast = loaded.algorithm.project(dict(loaded.model.named_parameters()))
    mask = dict(loaded.model.named_modules())["features.1.0"].cq_mask.mask
    assert torch.all(fast["features.1.0.weight"][mask == 0] == 0)
    plain = meta_train(config.replace(compress=None), tmp_path / "plain", progress=False)
    assert plain.algorithm.project is None


def test_anil_head_shortcut_on_a_compressed_head_equals_the_full_inner_loop():
    from fewbit.data.task import Task
    from fewbit.meta import MetaConfig, build_algorithm

    torch.manual_seed(0)
    model = compress(build_backbone("conv4", ways=5), "quant:w4a8")
    alg = build_algorithm(MetaConfig(algorithm="anil", inner_steps=3, inner_lr=0.5), model=model)
    task = Task(torch.randn(1, 5, 1, 28, 28), torch.arange(5).unsqueeze(0),
                torch.randn(1, 10, 1, 28, 28), torch.arange(5).repeat(2).unsqueeze(0), ways=5)
    params = {n: p.detach() for n, p in model.named_parameters()}
    shortcut = alg.predict(model, params, task, {})

    # The full inner loop runs the whole network every step through the same (task-folded) body, so
    # that only the shortcut differs: a conv computed another way may round an 8-bit activation
    # differently (see test_compressed_grouped_forward_equals_the_module_task_by_task).
    forward = batched_forward(model)
    fast = inner_loop(forward, expand_params(params, 1), task.support_x, task.support_y, steps=3, lr=0.5,
                      adapt=lambda n: n.startswith("head."), project=alg.project)
    reference = forward(fast, task.query_x)
    torch.testing.assert_close(shortcut, reference, atol=1e-4, rtol=1e-4)
    # and the adapted head is on the 4-bit grid
    assert _distinct_per_channel(project_params(model, fast)["head.weight"][0]) <= 16


@pytest.mark.parametrize(
    ("spec", "calibrated", "tol"),
    [("quant:w4", False, 1e-5), ("prune:0.5,quant:w2", False, 1e-5), ("cluster:8", False, 1e-5),
     ("prune:channel:0.5,quant:w4", False, 1e-5), ("quant:w4a8", True, 2e-2), ("quant:w4a8", False, 2e-2)],
)
def test_compressed_grouped_forward_equals_the_module_task_by_task(spec, calibrated, tol):
    """The task-folded forward of a compressed Conv-4 (shared and per-task weights) against the
    compressed module run on each task alone. Weight-only compression agrees to float rounding;
    8-bit activations may round a value the other way after a differently summed conv, so with
    them the logits agree to 2% of their range (the runtime's tolerance against PyTorch is 5%)."""
    from fewbit.compress import calibrate

    torch.manual_seed(0)
    model = compress(build_backbone("conv4", ways=5, width=16), spec)
    x = torch.randn(3, 10, 1, 28, 28)
    if calibrated:
        calibrate(model, [x.reshape(-1, 1, 28, 28)])
    params = {n: p.detach() for n, p in model.named_parameters()}
    # like fast weights: the layers' weights differ per task, compression's own parameters do not
    per_task = {n: p.expand(3, *p.shape) if "cq_" in n else p + 0.01 * torch.randn(3, *p.shape)
                for n, p in params.items()}
    forward = batched_forward(model)
    for batched in (expand_params(params, 3), per_task):
        out = forward(batched, x)
        ref = torch.stack([functional_call(model, {n: v[t] for n, v in batched.items()}, (x[t],)) for t in range(3)])
        assert (out - ref).abs().max() <= tol * ref.abs().max(), spec


@pytest.mark.parametrize("spec", [
    "quant:w4", "quant:w4:per_tensor", "quant:w4:lsq", "quant:w3:per_tensor:lsq", "quant:w4:asym:lsq",
    "quant:w2:mse", "prune:0.5,quant:w4:lsq", "cluster:4",
])
def test_weights_of_several_tasks_compress_as_each_alone(spec):
    """The one-pass task-batched transform (MAML's per-task fast weights) equals each task's weight
    compressed alone: values, and the gradients to the weights and to a learned step."""
    from fewbit.compress import compressed_layers

    torch.manual_seed(0)
    model = compress(build_backbone("conv4", ways=5), spec)
    layer = dict(compressed_layers(model))["features.1.0"]
    w = (layer.weight.detach().unsqueeze(0) + 0.05 * torch.randn(3, *layer.weight.shape)).requires_grad_()
    probe = torch.randn_like(w)
    params = [p for n, p in layer.named_parameters() if n.startswith("cq_")]
    batched = layer.compress_weight_tasks(w)
    grads = torch.autograd.grad((batched * probe).sum(), [w, *params])
    alone = torch.stack([layer.compress_weight(w[t]) for t in range(3)])
    grads_alone = torch.autograd.grad((alone * probe).sum(), [w, *params])
    torch.testing.assert_close(batched, alone, rtol=0, atol=0)
    for g, g_alone in zip(grads, grads_alone):
        torch.testing.assert_close(g, g_alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lsq", [False, True])
@pytest.mark.parametrize("task_dim", [0, 1])
def test_activations_of_several_tasks_quantize_with_each_task_range(lsq, task_dim):
    from fewbit.compress.quantize import ActQuant, QuantConfig

    torch.manual_seed(0)
    act = ActQuant(QuantConfig(bits_weight=None, bits_act=4, learnable_step=lsq))
    x = (torch.randn(4, 3, 6) * torch.tensor([1.0, 5.0, 0.2]).reshape(1, 3, 1)).movedim(1, task_dim)
    x.requires_grad_()
    got = act.forward_tasks(x, task_dim)
    want = torch.stack([act(x.select(task_dim, t)) for t in range(3)], task_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len(torch.unique(got.select(task_dim, 2))) <= 16  # each task on its own 4-bit grid
    g, = torch.autograd.grad(got.sum(), x)
    g_want, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g, g_want)
    act.scale.data.fill_(0.1)  # once calibrated: one range for all
    torch.testing.assert_close(act.forward_tasks(x, task_dim), act(x))
