"""Meta-Baseline (Chen et al. 2021): cosine similarity to the class means, scaled by a learned temperature.

Its recipe: pre-train a classifier over all training classes (the `finetune` or `simpleshot`
algorithm), then meta-train its body with this algorithm's episodes, starting from the
classifier's weights (`TrainConfig.init_from`). The temperature is an outer-learned extra that
starts at `MetaConfig.cosine_scale`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fewbit.config import setting
from fewbit.meta.base import Deployment, MetaConfig, Params, check_positive
from fewbit.meta.protonet import ProtoNet, cosine_logits, prototypes
from fewbit.meta.registry import register_algorithm

TEMPERATURE = "temperature"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaBaselineConfig(MetaConfig):
    """Meta-Baseline's settings: the temperature's starting value."""

    algorithm: str = "metabaseline"
    cosine_scale: float = setting(10.0, "the logit temperature's initial value")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "cosine_scale")


@register_algorithm("metabaseline", config=MetaBaselineConfig)
class MetaBaseline(ProtoNet):
    """Queries scored by `temperature x cos(query, class mean)` of the jointly embedded task."""

    def extra_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The logit temperature, initialised to `cosine_scale`."""
        return {TEMPERATURE: nn.Parameter(torch.tensor(float(self.config.cosine_scale)))}

    def score(
        self, z: torch.Tensor, n_support: int, support_y: torch.Tensor, ways: int, extras: Params
    ) -> torch.Tensor:
        scale = extras.get(TEMPERATURE, self.config.cosine_scale)
        return cosine_logits(z[:, n_support:], prototypes(z[:, :n_support], support_y, ways), scale)

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """Prototypes compared by cosine similarity, scaled by the learned temperature."""
        base = super().deployment(model, extras, scope)
        scale = float(torch.as_tensor((extras or {}).get(TEMPERATURE, self.config.cosine_scale)).detach())
        return Deployment({**base.adaptation, "metric": "cosine", "scale": scale}, ships_head=False)
