"""The meta-learning contract: MetaConfig, StepOutput, Deployment and the Algorithm interface."""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fewbit.config import brief, check, from_dict, setting, to_dict
from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.registry import ALGORITHMS, algorithm_names

Params = dict[str, torch.Tensor]
Project = Callable[[Params], Params]  # fast weights -> their compressed values (see fewbit.compress)

SCOPES = ("all", "head", "bias_norm", "none")
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
    """The settings every algorithm shares: which algorithm, and its inner loop.

    `inner_steps`, `inner_lr`, `scope` (which parameters adapt: all | head | bias_norm | none)
    and `first_order` drive the gradient-based algorithms; `eval_inner_steps` is the number of
    inner steps at evaluation (None: `inner_steps`, as in training). `batched` chooses the
    batched meta-batch path (grouped convolutions or vmap) over the per-task reference loop; both
    give the same numbers. `task_chunk` bounds the memory of the batched path: that many tasks are
    adapted and differentiated at a time (0: the whole meta-batch).

    Each algorithm registers its own subclass with its own settings beside it (`MAMLConfig` in
    maml.py, `FinetuneConfig` in finetune.py, ...); `meta_config(name, **fields)` builds the one
    an algorithm takes. A plain MetaConfig names any algorithm and takes that algorithm's defaults
    for the rest when it is built.
    """

    algorithm: str = setting("protonet", "the meta-learning algorithm", choices=algorithm_names)
    inner_steps: int = setting(1, "inner-loop gradient steps")
    inner_lr: float = setting(0.4, "inner-loop learning rate")
    scope: str = setting("all", "which parameters adapt", choices=lambda: SCOPES)
    first_order: bool = setting(False, "first-order gradients through the inner loop")
    eval_inner_steps: int | None = setting(None, "inner steps at evaluation (default: inner_steps)", flag=False)
    batched: bool = setting(True, "batched meta-batch path (grouped convolutions, vmap)", flag=False)
    task_chunk: int = setting(0, "batched training: tasks per chunk (0: all)", flag=False)

    def __post_init__(self) -> None:
        check(
            isinstance(self.algorithm, str) and self.algorithm in ALGORITHMS,
            OWNER,
            "algorithm",
            f"unknown algorithm {brief(self.algorithm)}; choose one of {', '.join(algorithm_names())}",
        )
        own = config_type(self.algorithm)
        check(issubclass(own, type(self)), OWNER, "algorithm",
              f"{self.algorithm} takes a {own.__name__}, not a {type(self).__name__}")
        for name in ("inner_steps", "task_chunk"):
            check_steps(self, name)
        check(
            self.eval_inner_steps is None
            or (_is_int(self.eval_inner_steps) and 0 <= self.eval_inner_steps <= MAX_STEPS),
            OWNER,
            "eval_inner_steps",
            f"must be an integer >= 0 (at most {MAX_STEPS}) or null, got {brief(self.eval_inner_steps)}",
        )
        check_positive(self, "inner_lr")
        check(self.scope in SCOPES, OWNER, "scope",
              f"unknown scope {brief(self.scope)}; choose one of {', '.join(SCOPES)}")
        allowed = ALGORITHMS[self.algorithm].scopes
        check(
            allowed is None or self.scope in allowed,
            OWNER,
            "scope",
            f"{self.algorithm} adapts {' or '.join(allowed or ())} only; got scope {brief(self.scope)}",
        )
        for name in ("first_order", "batched"):
            check_bool(self, name)

    @property
    def test_inner_steps(self) -> int:
        """Inner steps used by `predict` (evaluation)."""
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with `version` (this algorithm's fields only)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaConfig:
        """The config of the algorithm `data` names, from its fields. Fields of other algorithms
        (the flat MetaConfig that held every algorithm's settings wrote them all) are dropped when
        they hold that setting's default, and refused otherwise."""
        if not isinstance(data, dict):
            raise ConfigError(f"{OWNER}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        name = data.get("algorithm", "protonet")
        if not isinstance(name, str) or name not in ALGORITHMS:
            check(False, OWNER, "algorithm",
                  f"unknown algorithm {brief(name)}; choose one of {', '.join(algorithm_names())}")
        target = config_type(name)
        own = {f.name for f in dataclasses.fields(target)}
        defaults = setting_defaults()
        for key in sorted(set(data) - own - {"version"}):
            if key in defaults and data[key] == defaults[key][0]:
                del data[key]  # another algorithm's setting at its default: it never mattered here
            elif key in defaults:
                raise ConfigError(f"{OWNER}.{key}: a setting of {', '.join(defaults[key][1])}, not of {name}; "
                                  "remove it")
        return from_dict(target, data)

    def replace(self, **changes: Any) -> MetaConfig:
        """A copy with `changes`; a new `algorithm` gets its own config type, keeping every setting
        the two share (a finetune run tested as simpleshot keeps its cosine_scale)."""
        name = changes.get("algorithm", self.algorithm)
        target = config_type(name) if isinstance(name, str) and name in ALGORITHMS else type(self)
        own = {f.name for f in dataclasses.fields(target)}
        kept = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in own}
        unknown = sorted(set(changes) - own)
        if unknown:
            raise ConfigError(f"{OWNER}: {name} has no setting {', '.join(unknown)}")
        return target(**{**kept, **changes})


def config_type(algorithm: str) -> type[MetaConfig]:
    """The config class the algorithm `algorithm` takes."""
    return ALGORITHMS[algorithm].config_type or MetaConfig


def meta_config(algorithm: str, **fields: Any) -> MetaConfig:
    """The config of `algorithm` with `fields` (its own settings and the shared ones).

        >>> meta_config("maml", inner_steps=5, lslr=True)
        MAMLConfig(algorithm='maml', inner_steps=5, ..., lslr=True)
    """
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        check(False, OWNER, "algorithm",
              f"unknown algorithm {brief(algorithm)}; choose one of {', '.join(algorithm_names())}")
    return from_dict(config_type(algorithm), {**fields, "algorithm": algorithm})


def full_config(config: MetaConfig) -> MetaConfig:
    """`config` as its algorithm's own config type (a plain MetaConfig takes that type's defaults)."""
    target = config_type(config.algorithm)
    if type(config) is target:
        return config
    return target(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def setting_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every registered algorithm setting's field, by name (the shared ones first)."""
    out: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(MetaConfig)}
    for name in algorithm_names():
        for f in dataclasses.fields(config_type(name)):
            out.setdefault(f.name, f)
    return out


def setting_defaults() -> dict[str, tuple[Any, list[str]]]:
    """Every registered algorithm setting: its default, and the algorithms that have it."""
    out: dict[str, tuple[Any, list[str]]] = {}
    for name in algorithm_names():
        for f in dataclasses.fields(config_type(name)):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.setdefault(f.name, (default, []))[1].append(name)
    return out


def check_steps(config: Any, name: str) -> None:
    """ConfigError unless the field `name` is a number of steps 0..MAX_STEPS."""
    value = getattr(config, name)
    check(_is_int(value) and 0 <= value <= MAX_STEPS, OWNER, name,
          f"must be an integer >= 0 (at most {MAX_STEPS}), got {brief(value)}")


def check_positive(config: Any, name: str, *, optional: bool = False) -> None:
    """ConfigError unless the field `name` is a finite number > 0 (or None when `optional`)."""
    value = getattr(config, name)
    ok = (optional and value is None) or _is_positive(value)
    check(ok, OWNER, name, f"must be a number > 0{' or null' if optional else ''}, got {brief(value)}")


def check_bool(config: Any, name: str) -> None:
    """ConfigError unless the field `name` is true or false."""
    value = getattr(config, name)
    check(isinstance(value, bool), OWNER, name, f"must be true or false, got {brief(value)}")


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
