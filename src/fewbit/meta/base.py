"""The meta-learning contract: MetaConfig, StepOutput, the Algorithm interface and its registry."""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from fewbit.config import brief, check
from fewbit.data.task import Task
from fewbit.errors import ConfigError

Params = dict[str, torch.Tensor]

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "finetune")
SCOPES = ("all", "head", "bias_norm", "none")
CLASSIFIERS = ("linear", "cosine")
OWNER = "MetaConfig"
MAX_STEPS = 10_000  # inner/fine-tuning steps per task: a bound on the work one task may ask for


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value: Any) -> bool:
    """A finite number > 0 (an infinite rate makes every weight NaN)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:  # an int too large for a float
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaConfig:
    """The meta-learning algorithm and its inner loop.

    Fields used by every gradient-based algorithm: `inner_steps`, `inner_lr`, `scope` (which
    parameters adapt: all | head | bias_norm | none), `first_order`. `eval_inner_steps` is the
    number of inner steps at evaluation (None: `inner_steps`, as in training). `batched`
    chooses the batched meta-batch path (grouped convolutions or vmap) over the per-task
    reference loop; both give the same numbers. `task_chunk` bounds the memory of the batched
    path: that many tasks are adapted and differentiated at a time (0: the whole meta-batch).
    """

    algorithm: str = "protonet"
    inner_steps: int = 1
    inner_lr: float = 0.4
    scope: str = "all"
    first_order: bool = False
    eval_inner_steps: int | None = None
    batched: bool = True
    task_chunk: int = 0  # batched training: tasks per chunk, each chunk's gradient taken at once (0: all)
    metasgd_init_lr: float | None = None  # initial per-parameter learning rate (None: inner_lr)
    reptile_steps: int = 5  # inner SGD steps on support + query while meta-training with Reptile
    reptile_lr: float | None = None  # their learning rate (None: inner_lr)
    finetune_classifier: str = "linear"  # linear | cosine ("Baseline" / "Baseline++")
    finetune_steps: int = 100  # gradient steps fitting a new head on each support set at test time
    finetune_lr: float = 0.1
    cosine_scale: float = 10.0  # logit scale of the cosine classifier

    def __post_init__(self) -> None:
        check(
            self.algorithm in ALGORITHMS,
            OWNER,
            "algorithm",
            f"unknown algorithm {brief(self.algorithm)}; choose one of {', '.join(ALGORITHMS)}",
        )
        for name in ("inner_steps", "reptile_steps", "finetune_steps", "task_chunk"):
            value = getattr(self, name)
            check(_is_int(value) and 0 <= value <= MAX_STEPS, OWNER, name,
                  f"must be an integer >= 0 (at most {MAX_STEPS}), got {brief(value)}")
        check(
            self.eval_inner_steps is None
            or (_is_int(self.eval_inner_steps) and 0 <= self.eval_inner_steps <= MAX_STEPS),
            OWNER,
            "eval_inner_steps",
            f"must be an integer >= 0 (at most {MAX_STEPS}) or null, got {brief(self.eval_inner_steps)}",
        )
        for name in ("inner_lr", "finetune_lr", "cosine_scale"):
            value = getattr(self, name)
            check(_is_positive(value), OWNER, name, f"must be a number > 0, got {brief(value)}")
        for name in ("metasgd_init_lr", "reptile_lr"):
            value = getattr(self, name)
            check(value is None or _is_positive(value), OWNER, name,
                  f"must be a number > 0 or null, got {brief(value)}")
        check(self.scope in SCOPES, OWNER, "scope",
              f"unknown scope {brief(self.scope)}; choose one of {', '.join(SCOPES)}")
        check(
            self.algorithm != "anil" or self.scope in ("all", "head"),
            OWNER,
            "scope",
            f"anil adapts the head only; scope must be head (or all), got {brief(self.scope)}",
        )
        for name in ("first_order", "batched"):
            value = getattr(self, name)
            check(isinstance(value, bool), OWNER, name, f"must be true or false, got {brief(value)}")
        check(
            self.finetune_classifier in CLASSIFIERS,
            OWNER,
            "finetune_classifier",
            f"unknown classifier {brief(self.finetune_classifier)}; choose one of {', '.join(CLASSIFIERS)}",
        )

    @property
    def test_inner_steps(self) -> int:
        """Inner steps used by `predict` (evaluation)."""
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps


@dataclasses.dataclass
class StepOutput:
    """One training step: the loss (differentiable w.r.t. params and extras) and query accuracy.

    `grads` is set only by algorithms whose outer update is not the gradient of `loss`
    (Reptile: params minus the mean adapted params); `loss` is then detached.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor | None
    grads: Params | None = None


class Algorithm(abc.ABC):
    """A meta-learning algorithm: a training `step` on a batched Task and an evaluation `predict`.

    Neither mutates the model: parameters come in as a dict and go through
    `torch.func.functional_call`. `extras` are outer-learned tensors the algorithm owns
    (Meta-SGD's learning rates), created by `extra_parameters`.
    """

    name: str = ""
    episodic: bool = True

    def __init__(self, config: MetaConfig) -> None:
        self.config = config

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Outer-learned parameters beyond the model's (none by default)."""
        return {}

    @abc.abstractmethod
    def step(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> StepOutput:
        """The meta-training loss (mean over the tasks of `task`) and query accuracy."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Adapt on each task's support set; query logits `[tasks, N*Q, ways]` (values for regression)."""

    def step_supervised(
        self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, extras: Params | None = None
    ) -> StepOutput:
        """A plain supervised step over global class labels (non-episodic algorithms only)."""
        raise ConfigError(f"algorithm: {self.name} is episodic; it has no supervised step")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


A = TypeVar("A", bound=type[Algorithm])
_REGISTRY: dict[str, Callable[[MetaConfig], Algorithm]] = {}


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator: make `name` buildable by `build_algorithm`."""

    def wrap(cls: A) -> A:
        if name not in ALGORITHMS:
            raise ValueError(f"register_algorithm: add {name!r} to ALGORITHMS first")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def build_algorithm(config: MetaConfig | str) -> Algorithm:
    """The algorithm named by `config.algorithm` (a bare name uses the default config)."""
    if isinstance(config, str):
        config = MetaConfig(algorithm=config)
    from fewbit.meta import algorithms  # noqa: F401  (registers the built-in algorithms)

    if config.algorithm not in _REGISTRY:
        raise ConfigError(
            f"{OWNER}.algorithm: unknown algorithm {config.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
        )
    return _REGISTRY[config.algorithm](config)
