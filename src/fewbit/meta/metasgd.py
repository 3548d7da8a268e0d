"""Meta-SGD (Li et al. 2017): MAML with a learned learning rate for every parameter entry."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fewbit.config import setting
from fewbit.errors import ConfigError
from fewbit.meta.base import Deployment, Params, check_positive
from fewbit.meta.inner import LearningRate
from fewbit.meta.maml import MAML, MAMLConfig, runtime_moved
from fewbit.meta.registry import register_algorithm

PREFIX = "inner_lr."
LR_TENSOR = "__lr."  # an exported rate tensor's name: the parameter's name behind it


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD's settings: MAML's, plus the initial value of every learned rate."""

    algorithm: str = "metasgd"
    metasgd_init_lr: float | None = setting(None, "initial per-parameter learning rate (default: inner_lr)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "metasgd_init_lr", optional=True)


@register_algorithm("metasgd", config=MetaSGDConfig)
class MetaSGD(MAML):
    """Per-parameter inner learning rates, outer-learned: extras `inner_lr.<param name>`."""

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """One learning-rate tensor per adapted parameter, initialised to `metasgd_init_lr`."""
        init = self.config.metasgd_init_lr or self.config.inner_lr
        keep = self.adapt_filter(model)
        return {
            PREFIX + n: nn.Parameter(torch.full_like(p.detach(), init)) for n, p in model.named_parameters() if keep(n)
        }

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """MAML's deployment with the learned rate of every parameter the runtime moves, stored as
        tensors (`__lr.<name>`) that `adaptation.lr_tensors` names; without them the runtime would
        adapt with the scalar `inner_lr`, which is not what was meta-learned."""
        base = super().deployment(model, extras, scope)
        rates = self.inner_lr(extras or {})
        moved = runtime_moved(model, base.adaptation["scope"], rates)
        tensors = {f"{LR_TENSOR}{n}": rates[n].detach() for n in moved}
        adaptation = dict(base.adaptation, lr_tensors={n: f"{LR_TENSOR}{n}" for n in moved})
        return Deployment(adaptation, tensors, base.ships_head)

    def inner_lr(self, extras: Params) -> LearningRate:
        rates = {n[len(PREFIX) :]: v for n, v in extras.items() if n.startswith(PREFIX)}
        if not rates:
            raise ConfigError(
                "metasgd: no learned rates (extras inner_lr.*) given; pass the extras of extra_parameters() "
                "or of the checkpoint"
            )
        return rates
