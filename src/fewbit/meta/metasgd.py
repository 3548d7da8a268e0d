"""Meta-SGD (Li et al. 2017): MAML with a learned learning rate for every parameter entry."""

from __future__ import annotations

import torch
from torch import nn

from fewbit.errors import ConfigError
from fewbit.meta.base import Params, register_algorithm
from fewbit.meta.inner import LearningRate
from fewbit.meta.maml import MAML

PREFIX = "inner_lr."


@register_algorithm("metasgd")
class MetaSGD(MAML):
    """Per-parameter inner learning rates, outer-learned: extras `inner_lr.<param name>`."""

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """One learning-rate tensor per adapted parameter, initialised to `metasgd_init_lr`."""
        init = self.config.metasgd_init_lr or self.config.inner_lr
        keep = self.adapt_filter(model)
        return {
            PREFIX + n: nn.Parameter(torch.full_like(p.detach(), init)) for n, p in model.named_parameters() if keep(n)
        }

    def inner_lr(self, extras: Params) -> LearningRate:
        rates = {n[len(PREFIX) :]: v for n, v in extras.items() if n.startswith(PREFIX)}
        if not rates:
            raise ConfigError(
                "metasgd: no learned rates (extras inner_lr.*) given; pass the extras of extra_parameters() "
                "or of the checkpoint"
            )
        return rates
