"""Distillation from a teacher run (`TrainConfig.teacher`): the loss mixes cross-entropy with the KL
divergence to the teacher's softened scores; bad teachers are refused before training starts."""

from __future__ import annotations

import json

import pytest
import torch

from fewbit.cli import main
from fewbit.compress.distill import kd_loss
from fewbit.errors import ConfigError
from fewbit.train import load_config, load_run, meta_train, resume_training
from fewbit.train import loop as train_loop
from fewbit.train.checkpoint import step_checkpoints


def _config(spec: str, **changes: object):  # noqa: ANN202
    base = {"dataset": spec, "image_size": 16, "backbone": "conv4", "algorithm": "finetune", "ways": 3, "shots": 1,
            "queries": 2, "batch_size": 16, "steps": 3, "val_every": 0, "rotations": True, "device": "cpu",
            "augment": "none"}  # folder: data augments by default; distillation is measured without
    return load_config(None, **{**base, **changes})


def _losses(run_dir) -> list[float]:  # noqa: ANN001
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def teacher_dir(tiny_colour, tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("teacher") / "run"
    meta_train(_config(tiny_colour, steps=6, seed=1), out, progress=False)
    return out


def test_the_loss_is_the_mix_of_cross_entropy_and_the_kl_to_the_teacher(tiny_colour, teacher_dir, tmp_path,
                                                                        monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    real = train_loop.load_teacher

    def spying_teacher(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model = real(*args, **kwargs)

        def forward(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return model(x)

        return forward

    monkeypatch.setattr(train_loop, "load_teacher", spying_teacher)
    w, t = 0.3, 2.0
    meta_train(_config(tiny_colour, steps=1, teacher=str(teacher_dir), teacher_weight=w, teacher_temperature=t),
               tmp_path / "student", progress=False)
    meta_train(_config(tiny_colour, steps=1), tmp_path / "plain", progress=False)  # the same batch, no teacher
    start = meta_train(_config(tiny_colour, steps=0), tmp_path / "start", progress=False).model.train()
    teacher = load_run(teacher_dir).model.eval()
    (x,) = seen
    with torch.no_grad():
        kd = float(kd_loss(start(x), teacher(x), t))
    ce = _losses(tmp_path / "plain")[0]
    assert kd > 0.01  # the two models disagree: the check below can tell a mix from plain cross-entropy
    assert _losses(tmp_path / "student")[0] == pytest.approx((1 - w) * ce + w * kd, rel=1e-5)


def test_a_taught_run_ends_closer_to_its_teacher_and_resumes_bit_for_bit(tiny_colour, teacher_dir,
                                                                         tmp_path) -> None:
    taught = _config(tiny_colour, steps=8, teacher=str(teacher_dir), teacher_weight=1.0, checkpoint_every=2)
    meta_train(taught, tmp_path / "taught", progress=False)
    meta_train(_config(tiny_colour, steps=8), tmp_path / "plain", progress=False)
    teacher = load_run(teacher_dir).model.eval()
    x = torch.rand(32, 3, 16, 16)
    with torch.no_grad():
        gaps = [float(kd_loss(load_run(tmp_path / d).model.eval()(x), teacher(x), 1.0)) for d in ("taught", "plain")]
    assert gaps[0] < 0.5 * gaps[1]

    def stop_at_5(record: dict) -> None:
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        meta_train(taught, tmp_path / "cut", progress=False, on_step=stop_at_5)
    assert step_checkpoints(tmp_path / "cut" / "checkpoints")[0].name == "step-00000004.safetensors"
    resume_training(tmp_path / "cut", progress=False)
    a, b = (load_run(tmp_path / d, checkpoint="last").model.state_dict() for d in ("taught", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_teachers_are_refused_before_training(tiny_colour, teacher_dir, tmp_path) -> None:
    cases = [
        ({"teacher": str(tmp_path)}, "not a run directory"),
        ({"teacher": str(teacher_dir), "rotations": False}, "scores 36 classes, this run trains on 9"),
        ({"teacher": str(teacher_dir), "image_size": 20}, "inputs of shape"),
        ({"teacher": str(teacher_dir), "algorithm": "protonet"}, "protonet is episodic"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError, match=message):
            meta_train(_config(tiny_colour, **changes), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="cannot teach itself"):
        meta_train(_config(tiny_colour, teacher=str(teacher_dir)), teacher_dir, progress=False, resume=True)
    for field, value in (("teacher_weight", 0), ("teacher_weight", 1.5), ("teacher_temperature", 0),
                         ("teacher", "")):
        with pytest.raises(ConfigError, match=f"TrainConfig.{field}"):
            _config(tiny_colour, **{field: value})


def test_cli_teacher_flags(tiny_colour, teacher_dir, tmp_path, capsys) -> None:
    common = ["train", "--dataset", tiny_colour, "--image-size", "16", "--backbone", "conv4", "--algorithm",
              "finetune", "--ways", "3", "--queries", "2", "--rotations", "--steps", "2", "--val-every", "0",
              "--quiet", "--device", "cpu"]
    assert main([*common, "--teacher", str(teacher_dir), "--teacher-weight", "0.25", "--out",
                 str(tmp_path / "s")]) == 0
    saved = load_run(tmp_path / "s").config
    assert (saved.teacher, saved.teacher_weight) == (str(teacher_dir), 0.25)
    capsys.readouterr()
    assert main([*common, "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]
