"""Exact resume: an interrupted run (kill -9 included) resumed from its checkpoints ends bit-for-bit equal."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fewbit.errors import ConfigError
from fewbit.train import load_config, load_run, meta_train, resume_training
from fewbit.train.checkpoint import step_checkpoints

SINE = {"dataset": "sinusoid", "algorithm": "maml", "shots": 5, "queries": 5, "meta_batch": 3, "inner_lr": 0.01,
        "steps": 10, "val_every": 4, "val_tasks": 5, "checkpoint_every": 3, "schedule": "cosine", "device": "cpu"}


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_run(run_dir, checkpoint="last").model.state_dict()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _interrupt_at(step: int):
    """An `on_step` callback that stops training once `step` is done (before its checkpoint is written)."""

    def on_step(record: dict) -> None:
        if record["step"] == step:
            raise KeyboardInterrupt

    return on_step


@pytest.mark.parametrize("algorithm", ["protonet", "finetune"])
def test_interrupted_image_run_resumes_bit_for_bit(tiny_images, tmp_path, algorithm):
    settings = {"dataset": tiny_images, "algorithm": algorithm, "backbone": "mlp", "ways": 3, "shots": 1, "queries": 2,
                "meta_batch": 2, "batch_size": 8, "steps": 8, "val_every": 3, "val_tasks": 3, "checkpoint_every": 2,
                "rotations": True, "schedule": "cosine", "device": "cpu"}
    if algorithm == "finetune":
        settings["finetune_steps"] = 2
    config = load_config(None, **settings)
    meta_train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        meta_train(config, tmp_path / "cut", progress=False, on_step=_interrupt_at(6))
    assert step_checkpoints(tmp_path / "cut" / "checkpoints")[0].name == "step-00000004.safetensors"
    resume_training(tmp_path / "cut", progress=False)
    assert _equal(_final(tmp_path / "whole"), _final(tmp_path / "cut"))
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "time"} for x in whole]


def test_interrupted_augmented_colour_run_resumes_bit_for_bit(tiny_colour, tmp_path):
    settings = {"dataset": tiny_colour, "image_size": 16, "algorithm": "protonet", "backbone": "conv4", "ways": 3,
                "shots": 1, "queries": 2, "meta_batch": 2, "steps": 6, "val_every": 3, "val_tasks": 3,
                "checkpoint_every": 2, "augment": "auto", "device": "cpu"}
    config = load_config(None, **settings)
    meta_train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        meta_train(config, tmp_path / "cut", progress=False, on_step=_interrupt_at(4))
    resume_training(tmp_path / "cut", progress=False)
    assert _equal(_final(tmp_path / "whole"), _final(tmp_path / "cut"))
    plain = load_config(None, **{**settings, "augment": "none"})
    meta_train(plain, tmp_path / "plain", progress=False)
    assert not _equal(_final(tmp_path / "whole"), _final(tmp_path / "plain"))  # augmentation did change training


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    config = load_config(None, **SINE)
    meta_train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        meta_train(config, tmp_path / "cut", progress=False, on_step=_interrupt_at(8))
    newest = step_checkpoints(tmp_path / "cut" / "checkpoints")[0]
    assert newest.name == "step-00000006.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte in the middle
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step-00000006.*falling back"):
        resume_training(tmp_path / "cut", progress=False)
    assert _equal(_final(tmp_path / "whole"), _final(tmp_path / "cut"))


def test_resume_can_extend_steps_but_not_change_settings(tmp_path):
    config = load_config(None, **{**SINE, "schedule": "constant", "steps": 4})
    meta_train(config, tmp_path / "r", progress=False)
    run = resume_training(tmp_path / "r", steps=6, progress=False)
    assert run.step == 6
    with pytest.raises(ConfigError, match="not a run directory"):
        meta_train(config, tmp_path / "nothing", resume=True, progress=False)


_TRAIN_SCRIPT = """
import sys
from fewbit.train import load_config, meta_train, resume_training
settings = dict(dataset="sinusoid", algorithm="maml", shots=5, queries=5, meta_batch=4, inner_lr=0.01, steps=60,
                val_every=50, val_tasks=5, checkpoint_every=7, schedule="cosine", device="cpu")
if sys.argv[1] == "resume":
    resume_training(sys.argv[2], progress=False)
else:
    meta_train(load_config(None, **settings), sys.argv[2], progress=False)
"""


def _python(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, *args], env=env, **kwargs)


def _metric_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_9_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole = _python("train", str(tmp_path / "whole"))
    kill_after = random.Random().randint(5, 50)  # a random step, different each run
    cut = _python("train", str(tmp_path / "cut"))
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while _metric_lines(metrics) < kill_after and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    cut.send_signal(signal.SIGKILL)
    assert cut.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert whole.wait(timeout=180) == 0
    resumed = _python("resume", str(tmp_path / "cut"))
    assert resumed.wait(timeout=180) == 0
    assert _equal(_final(tmp_path / "whole"), _final(tmp_path / "cut")), f"killed after ~{kill_after} metric lines"


def _old_flat(config: dict) -> dict:
    """A config dict in the flat form fewbit wrote before options nested per kind (issue 25): the data
    options at the top level with every kind's defaults, the meta mapping with every algorithm's settings."""
    from fewbit.data.registry import option_defaults
    from fewbit.meta.base import setting_defaults

    flat = {k: v for k, v in config.items() if k != "data"}
    flat.update({name: default for name, (default, _) in option_defaults().items()})
    flat.update({k: v for k, v in config["data"].items() if k != "version"})
    flat["meta"] = {**{name: d for name, (d, _) in setting_defaults().items()}, **config["meta"]}
    return flat


def test_a_run_written_in_the_old_flat_form_loads_and_resumes_bit_for_bit(tmp_path):
    """Run directories written before issue 25 (flat config.yaml and checkpoint state) still load and resume."""
    import yaml

    from fewbit.train.checkpoint import encode, load_checkpoint

    config = load_config(None, **SINE)
    meta_train(config, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        meta_train(config, tmp_path / "old", progress=False, on_step=_interrupt_at(7))
    old = tmp_path / "old"
    flat = _old_flat(config.to_dict())
    (old / "config.yaml").write_text(yaml.safe_dump(flat, sort_keys=False))
    for path in [*step_checkpoints(old / "checkpoints"), old / "checkpoints" / "best.safetensors"]:
        ckpt = load_checkpoint(path)
        state = {k: v for k, v in ckpt.state.items() if k not in ("format", "version")}
        state["config"] = _old_flat(state["config"])
        path.write_bytes(encode(ckpt.tensors, state))
    assert load_run(old).config == config
    resume_training(old, progress=False)
    assert _equal(_final(tmp_path / "whole"), _final(old))
