"""A teacher for knowledge distillation during training: a finished run whose model the new one mimics.

Born-again self-distillation (Furlanello et al. 2018; for few-shot embeddings Tian et al. 2020):
a supervised run is trained again with its loss mixed with the KL divergence to a trained run's
softened class scores over the same training classes (`TrainConfig.teacher`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from fewbit.compress.distill import kd_loss
from fewbit.errors import ConfigError
from fewbit.meta.base import StepOutput
from fewbit.runtime.preprocess import Preprocessing
from fewbit.train.run import is_run_dir, load_run

OWNER = "TrainConfig.teacher"


def load_teacher(
    run_dir: str | Path, *, classes: int, input_shape: tuple[int, ...], preprocessing: Preprocessing | None,
    device: torch.device, student_dir: Path | None = None,
) -> nn.Module:
    """The frozen model of the finished run in `run_dir` (its best checkpoint), in eval mode.

    ConfigError unless it scores the same `classes` training classes from inputs of the same
    `input_shape` and `preprocessing`, or when it is the student's own run directory."""
    path = Path(run_dir)
    if not is_run_dir(path):
        raise ConfigError(f"{OWNER}: {run_dir} is not a run directory (it has no config.yaml); train the teacher first")
    if student_dir is not None and path.resolve() == Path(student_dir).resolve():
        raise ConfigError(f"{OWNER}: {run_dir} is this run's own directory; a run cannot teach itself")
    run = load_run(path, device=str(device))
    if tuple(run.input_shape) != tuple(input_shape):
        raise ConfigError(f"{OWNER}: {run_dir} takes inputs of shape {tuple(run.input_shape)}, this run "
                          f"{tuple(input_shape)}; train the teacher with the same image size and channels")
    mine = preprocessing.to_dict() if preprocessing is not None else None
    theirs = run.preprocessing.to_dict() if run.preprocessing is not None else None
    if mine != theirs:
        raise ConfigError(f"{OWNER}: {run_dir} standardises its inputs differently from this run; "
                          "train the teacher on the same data spec")
    model = run.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        width = model(torch.zeros(1, *input_shape, device=device)).shape[-1]
    if width != classes:
        raise ConfigError(f"{OWNER}: {run_dir} scores {width} classes, this run trains on {classes}; "
                          "the teacher must be a supervised run (finetune) on the same training classes")
    return model


class Distillation:
    """Mixes a supervised step's loss with the KL divergence to a teacher's softened scores:
    `(1 - weight) * loss + weight * KD(student, teacher; temperature)`."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float) -> None:
        self.teacher, self.weight, self.temperature = teacher, weight, temperature

    def __call__(self, out: StepOutput, x: torch.Tensor) -> StepOutput:
        """`out` (a supervised step on inputs `x`) with its loss mixed with the distillation loss."""
        if out.logits is None:  # pragma: no cover - every supervised algorithm returns its logits
            raise ConfigError(f"{OWNER}: the algorithm does not expose its class scores")
        with torch.no_grad():
            target = self.teacher(x)
        loss = (1 - self.weight) * out.loss + self.weight * kd_loss(out.logits, target, self.temperature)
        return dataclasses.replace(out, loss=loss)
