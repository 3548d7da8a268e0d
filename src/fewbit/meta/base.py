"""The meta-learning contract: MetaConfig, StepOutput, Deployment and the Algorithm interface."""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fewbit.config import brief, check
from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.registry import ALGORITHMS, algorithm_names

Params = dict[str, torch.Tensor]
Project = Callable[[Params], Params]  # fast weights -> their compressed values (see fewbit.compress)

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
    cosine_scale: float = 10.0  # logit scale of the cosine classifier (Meta-Baseline: its initial temperature)
    # MAML++ (Antoniou et al. 2019), for the MAML family:
    first_order_steps: int = 0  # outer steps trained first-order before second order takes over
    multi_step_loss_steps: int = 0  # outer steps over which the query loss after every inner step counts,
    #                                 annealed from equal weights to the last step alone (0: last step only)
    lslr: bool = False  # learn a rate per parameter tensor and inner step (extras `lslr.<name>`)

    def __post_init__(self) -> None:
        check(
            isinstance(self.algorithm, str) and self.algorithm in ALGORITHMS,
            OWNER,
            "algorithm",
            f"unknown algorithm {brief(self.algorithm)}; choose one of {', '.join(algorithm_names())}",
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
        allowed = ALGORITHMS[self.algorithm].scopes
        check(
            allowed is None or self.scope in allowed,
            OWNER,
            "scope",
            f"{self.algorithm} adapts {' or '.join(allowed or ())} only; got scope {brief(self.scope)}",
        )
        for name in ("first_order_steps", "multi_step_loss_steps"):
            value = getattr(self, name)
            check(_is_int(value) and value >= 0, OWNER, name, f"must be an integer >= 0, got {brief(value)}")
        for name in ("first_order", "batched", "lslr"):
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
    logits: torch.Tensor | None = None  # a supervised step's `[B, classes]` (what a teacher is distilled into)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """How the numpy runtime adapts an exported model, as the algorithm says.

    `adaptation` is the artifact's `adaptation` block (method, embed, scope, steps, lr, head_init;
    see `fewbit.runtime.adapt`); `tensors` are stored in the artifact like any weight (Meta-SGD's
    learned rates, which `adaptation["lr_tensors"]` names per parameter); `ships_head` says
    whether the trained head is stored (ProtoNet classifies by prototypes and needs none).
    """

    adaptation: dict[str, Any]
    tensors: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    ships_head: bool = True


# What the runtime may move for each adaptation scope: it never moves quantized weights, so `all`
# becomes the head, every bias and every norm (the body's weights stay as they ship).
RUNTIME_SCOPE = {"all": "head+bias+norm", "bias_norm": "bias+norm", "head": "head", "none": "none"}


class Algorithm(abc.ABC):
    """A meta-learning algorithm: a training `step` on a batched Task and an evaluation `predict`.

    Neither mutates the model: parameters come in as a dict and go through
    `torch.func.functional_call`. `extras` are outer-learned tensors the algorithm owns
    (Meta-SGD's learning rates), created by `extra_parameters`. `project`, given at
    construction, maps fast weights onto their compressed values after every inner step (build
    algorithms with `fewbit.meta.build_algorithm(config, model=model)`, which sets it for a
    compressed model). What callers ask of an algorithm is answered here: `episodic`,
    `uses_trained_head`, `test_scope`, `deployment`.
    """

    name: str = ""
    episodic: bool = True  # trained on episodes (False: plain supervised batches over all classes)
    uses_trained_head: bool = True  # predictions come from the trained head (so its number of ways is fixed)
    scopes: tuple[str, ...] | None = None  # the MetaConfig scopes it accepts (None: any)

    def __init__(self, config: MetaConfig, *, project: Project | None = None) -> None:
        self.config = config
        self.project = project

    @property
    def test_scope(self) -> str:
        """Which parameters adapt to a support set at test time (a `SCOPES` name)."""
        return self.config.scope

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Outer-learned parameters beyond the model's (none by default)."""
        return {}

    @abc.abstractmethod
    def step(
        self, model: nn.Module, params: Params, task: Task, extras: Params | None = None, *,
        outer_step: int | None = None,
    ) -> StepOutput:
        """The meta-training loss (mean over the tasks of `task`) and query accuracy; `outer_step`
        (1, 2, ... as training goes; None outside training) lets schedules depend on progress."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Adapt on each task's support set; query logits `[tasks, N*Q, ways]` (values for regression)."""

    @abc.abstractmethod
    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """How the runtime adapts this algorithm's exported model; `scope` narrows what it may move
        (a runtime scope such as "head+bias"). ConfigError for what the runtime cannot reproduce."""

    def step_supervised(
        self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, extras: Params | None = None
    ) -> StepOutput:
        """A plain supervised step over global class labels (non-episodic algorithms only)."""
        raise ConfigError(f"algorithm: {self.name} is episodic; it has no supervised step")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
