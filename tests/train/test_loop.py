"""meta_train end to end on tiny budgets: the run directory, load_run, validation, guards, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from fewbit.errors import ConfigError, DataError, FewbitFormatError, TrainingError
from fewbit.evaluation import evaluate
from fewbit.meta import StepOutput
from fewbit.train import TrainConfig, load_config, load_run, meta_train
from fewbit.train import loop as loop_module
from fewbit.train.run import eval_dataset, train_times

SINE = {"dataset": "sinusoid", "algorithm": "maml", "shots": 10, "queries": 10, "meta_batch": 4, "inner_lr": 0.01,
        "steps": 12, "val_every": 4, "val_tasks": 10, "checkpoint_every": 4, "device": "cpu"}


def _image_config(spec: str, **changes) -> TrainConfig:
    base = {"dataset": spec, "backbone": "mlp", "ways": 3, "shots": 1, "queries": 3, "meta_batch": 2, "steps": 3,
            "val_every": 3, "val_tasks": 4, "checkpoint_every": 2, "batch_size": 16, "device": "cpu"}
    if changes.get("algorithm") in ("finetune", "simpleshot"):
        base["finetune_steps"] = 3  # an algorithm's own setting: only the algorithms that have it take it
    return load_config(None, **{**base, **changes})


def _weights(run_or_model) -> dict[str, torch.Tensor]:
    model = getattr(run_or_model, "model", run_or_model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_run_directory_holds_config_metrics_checkpoints(run_dir):
    config = load_config(None, **SINE)
    run = meta_train(config, run_dir, progress=False)
    assert run.step == 12 and run.best is not None and run.best["metric"] == "mse"
    assert load_config(run_dir / "config.yaml") == config
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert [r["step"] for r in val] == [4, 8, 12]
    assert all(r["metric"] == "mse" and r["value"] >= 0 for r in val)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.safetensors", "step-00000008.safetensors", "step-00000012.safetensors"]
    last = load_run(run_dir, checkpoint="last")
    assert all(torch.equal(a, b) for a, b in zip(_weights(last).values(), _weights(run).values()))
    best = load_run(run_dir)
    assert best.step == run.best["step"]
    result = evaluate(best.predictor(), None, shots=10, queries=10, tasks=8)
    assert result.metric == "mse" and result.tasks == 8
    times = train_times(run_dir)  # the training records' wall seconds, by step
    assert sorted(times) == list(range(1, 13)) and times == {r["step"]: r["time"] for r in train}
    assert all(times[k] <= times[k + 1] for k in range(1, 12))
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 13, "kind": "tr')  # a write torn by an interrupt
    assert train_times(run_dir) == times
    with pytest.raises(FewbitFormatError, match="metrics.jsonl"):
        train_times(run_dir / "checkpoints")


@pytest.mark.parametrize("algorithm", ["protonet", "finetune", "reptile", "metasgd"])
def test_image_algorithms_train_and_reload(tiny_colour, tmp_path, algorithm):
    config = _image_config(tiny_colour, algorithm=algorithm, image_size=12, steps=20, inner_lr=0.1)
    run = meta_train(config, tmp_path / algorithm, progress=False)
    again = load_run(tmp_path / algorithm, checkpoint="last")
    if algorithm == "finetune":  # head over all 9 train classes
        assert again.model.head.out_features == 9
    if algorithm == "metasgd":  # the learned rates come back, and they were learned (moved from their init)
        assert again.extras.keys() == run.extras.keys() and again.extras
        assert all(torch.equal(again.extras[k], run.extras[k]) for k in again.extras)
        init = config.meta.metasgd_init_lr or config.meta.inner_lr
        assert any(not torch.allclose(v, torch.full_like(v, init)) for v in again.extras.values())
    test = eval_dataset(tiny_colour, "test", config, again.preprocessing)
    result = evaluate(again.predictor(), test, ways=3, shots=1, queries=3, tasks=60)
    assert result.accuracy - result.ci95 > 1 / 3, result  # 3-way: above chance (1/3) with 95% confidence
    same = evaluate(run.predictor(), test, ways=3, shots=1, queries=3, tasks=60)
    assert same.per_task == result.per_task  # the reloaded run predicts as the trained one


def test_validation_never_changes_the_weights(run_dir, tmp_path):
    a = meta_train(load_config(None, **{**SINE, "val_every": 0}), tmp_path / "a", progress=False)
    b = meta_train(load_config(None, **{**SINE, "val_every": 3}), tmp_path / "b", progress=False)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a).values(), _weights(b).values()))


def test_sinusoid_meta_training_beats_a_random_init(tmp_path):
    """A learning test (it can fail): after MAML, 1 inner step on 10 points fits better than from scratch."""
    config = load_config(None, **{**SINE, "steps": 120, "meta_batch": 5, "val_every": 0, "checkpoint_every": 0,
                                  "outer_lr": 1e-2})
    trained = meta_train(config, tmp_path / "maml", progress=False)
    torch.manual_seed(123)
    from fewbit.train.run import Run, build_model

    fresh_model = build_model(config, 1)
    fresh = Run(config, fresh_model, trained.algorithm, {}, None)
    after = evaluate(trained.predictor(), None, shots=10, queries=10, tasks=100).value
    before = evaluate(fresh.predictor(), None, shots=10, queries=10, tasks=100).value
    print(f"query MSE after 1 inner step: meta-trained {after:.3f}, random init {before:.3f}")
    assert after < 0.8 * before, (after, before)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(run_dir, monkeypatch):
    config = load_config(None, **{**SINE, "steps": 10, "checkpoint_every": 0, "val_every": 0})
    real_init = loop_module.Trainer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        real_step, calls = self.algorithm.step, {"n": 0}

        def step(model, params, task, extras, **kwargs):
            calls["n"] += 1
            out = real_step(model, params, task, extras, **kwargs)
            return StepOutput(out.loss * float("nan"), out.accuracy) if calls["n"] == 6 else out

        self.algorithm.step = step

    monkeypatch.setattr(loop_module.Trainer, "__init__", init)
    with pytest.raises(TrainingError, match=r"step 6: the loss is nan.*step-00000005"):
        meta_train(config, run_dir, progress=False)
    monkeypatch.undo()
    last = load_run(run_dir, checkpoint="last")
    assert last.step == 5
    assert all(torch.isfinite(p).all() for p in last.model.parameters())


def test_bad_input_gives_one_clear_error(tiny_images, tmp_path):
    with pytest.raises(DataError, match="shots \\+ queries"):
        meta_train(_image_config(tiny_images, shots=8, queries=3), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="backbone"):
        meta_train(_image_config(tiny_images, backbone="vgg"), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="mlp"):
        meta_train(load_config(None, **{**SINE, "backbone": "conv4"}), tmp_path / "c", progress=False)
    with pytest.raises(FewbitFormatError, match="not a run directory"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match="TrainConfig.compress: spec: unknown method"):
        meta_train(load_config(None, **{**SINE, "compress": "int4"}), tmp_path / "d", progress=False)
    meta_train(load_config(None, **{**SINE, "steps": 1}), tmp_path / "e", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        meta_train(load_config(None, **{**SINE, "steps": 1}), tmp_path / "e", progress=False)


def test_compress_spec_is_applied_and_rebuilt_on_load(tmp_path):
    config = load_config(None, **{**SINE, "steps": 3, "compress": "quant:w8"})
    run = meta_train(config, tmp_path / "q", progress=False)
    again = load_run(tmp_path / "q", checkpoint="last")
    assert type(again.model.head) is type(run.model.head) and type(run.model.head).__name__ != "Linear"
    assert all(torch.equal(a, b) for a, b in zip(_weights(again).values(), _weights(run).values()))


def test_a_given_module_is_trained_in_place(tmp_path):
    from fewbit.models import build_backbone

    model = build_backbone("mlp", ways=1, in_features=1, hidden=(8,))
    before = _weights(model)
    config = load_config(None, **{**SINE, "steps": 3})
    run = meta_train(config, tmp_path / "m", model=model, progress=False)
    assert run.model is model
    assert any(not torch.equal(before[k], v) for k, v in _weights(model).items())
    assert load_run(tmp_path / "m", model=build_backbone("mlp", ways=1, in_features=1, hidden=(8,))).step == 3


def test_patience_stops_when_validation_stops_improving_and_a_resume_stays_stopped(run_dir):
    """Validation that never beats its first value: with patience 2 and a validation every 4 steps,
    training stops at step 12 of 40 and says why; the best checkpoint (step 4) is what load_run gives."""
    from fewbit.train import resume_training

    config = load_config(None, **{**SINE, "steps": 40, "patience": 2, "outer_lr": 1e-30})
    run = meta_train(config, run_dir, progress=False)
    assert run.step == 12 and run.best["step"] == 4
    assert run.stopped is not None and "stopped at step 12 of at most 40" in run.stopped
    assert "2 validations in a row" in run.stopped and "step 4" in run.stopped
    assert load_run(run_dir).step == 4
    again = resume_training(run_dir, progress=False)
    assert again.step == 12 and again.stopped is not None


def test_without_patience_the_same_run_trains_every_step(run_dir):
    run = meta_train(load_config(None, **{**SINE, "steps": 16, "outer_lr": 1e-30}), run_dir, progress=False)
    assert run.step == 16 and run.stopped is None


def test_the_cli_says_when_and_why_training_stopped(run_dir, capsys):
    from fewbit.cli import main

    argv = ["train", "--dataset", "sinusoid", "--algorithm", "maml", "--shots", "10", "--queries", "10",
            "--meta-batch", "4", "--inner-lr", "0.01", "--steps", "40", "--val-every", "4", "--val-tasks", "10",
            "--patience", "2", "--outer-lr", "1e-30", "--device", "cpu", "--out", str(run_dir), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained maml for 12 steps" in out and "stopped at step 12 of at most 40" in out
