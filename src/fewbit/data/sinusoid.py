"""MAML's sinusoid regression family: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fewbit.data.registry import register_source
from fewbit.data.task import Task
from fewbit.errors import ConfigError

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidSampler:
    """Draws regression tasks with `shots` support and `queries` query points each."""

    def __init__(self, *, shots: int, queries: int, generator: torch.Generator | None = None) -> None:
        if shots < 1 or queries < 1:
            raise ConfigError(f"sinusoid: shots and queries must be >= 1, got {shots} and {queries}")
        self.shots, self.queries = shots, queries
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def sample(self, tasks: int = 1) -> Task:
        """A meta-batch: `x`, `y` are `[tasks, points, 1]`."""
        g = self.generator
        amp = torch.empty(tasks, 1, 1).uniform_(*AMPLITUDE, generator=g)
        phase = torch.empty(tasks, 1, 1).uniform_(*PHASE, generator=g)
        x = torch.empty(tasks, self.shots + self.queries, 1).uniform_(*X_RANGE, generator=g)
        y = amp * torch.sin(x - phase)
        s = self.shots
        return Task(x[:, :s], y[:, :s], x[:, s:], y[:, s:], ways=0)

    @staticmethod
    def info() -> dict[str, object]:
        return {
            "name": "sinusoid",
            "kind": "regression",
            "amplitude": list(AMPLITUDE),
            "phase": list(PHASE),
            "x_range": list(X_RANGE),
        }


@dataclasses.dataclass(frozen=True)
class RegressionSource:
    """A regression task family (sinusoid)."""

    spec: str
    kind: str = "regression"

    def info(self, split: str = "all") -> dict[str, object]:
        return {"spec": self.spec, **SinusoidSampler.info()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinusoidOptions:
    """The sinusoid family has no reading options."""

    def to_dict(self) -> dict[str, Any]:
        return {}

    def for_preprocessing(self, preprocessing: Any) -> SinusoidOptions:
        return self

    def input_shape_hint(self) -> tuple[int, ...] | None:
        return (1,)


@register_source("sinusoid", options=SinusoidOptions, kind="regression", path=False, backbone="mlp",
                 help="MAML's regression family (amplitude U[0.1, 5], phase U[0, pi], x in U[-5, 5])")
def sinusoid_source(arg: str, options: SinusoidOptions, *, progress: bool = True) -> RegressionSource:
    """`sinusoid`: a task family drawn on demand (no splits)."""
    return RegressionSource("sinusoid")
