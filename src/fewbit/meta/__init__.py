"""Meta-learning: the shared functional inner loop and the algorithms built on it.

`build_algorithm(MetaConfig(algorithm=...), model=model)` gives one of the registered algorithms
(maml fomaml metasgd anil reptile protonet finetune metabaseline simpleshot, or one of your own:
`register_algorithm`);
its `step` trains on a batched Task and its `predict` adapts to each task's support set.
`adapt(model, support)` wraps `predict` for users.
"""

from __future__ import annotations

# The built-in algorithms register themselves on import (the registry never imports them), in this order.
# isort: off
from fewbit.meta import maml, metasgd, anil, reptile, protonet, finetune, metabaseline, simpleshot  # noqa: F401
# isort: on
from fewbit.meta.adapt import AdaptedPredictor, adapt
from fewbit.meta.base import SCOPES, Algorithm, Deployment, MetaConfig, Params, StepOutput, config_type, meta_config
from fewbit.meta.build import build_algorithm
from fewbit.meta.finetune import FinetuneConfig
from fewbit.meta.functional import batched_forward
from fewbit.meta.inner import inner_loop, task_accuracy, task_loss
from fewbit.meta.maml import MAMLConfig
from fewbit.meta.metabaseline import MetaBaselineConfig
from fewbit.meta.metasgd import MetaSGDConfig
from fewbit.meta.registry import ALGORITHMS, algorithm_names, register_algorithm
from fewbit.meta.reptile import ReptileConfig
from fewbit.meta.scopes import is_compression_param, scope_filter

__all__ = [
    "ALGORITHMS",
    "SCOPES",
    "AdaptedPredictor",
    "Algorithm",
    "Deployment",
    "FinetuneConfig",
    "MAMLConfig",
    "MetaBaselineConfig",
    "MetaSGDConfig",
    "ReptileConfig",
    "MetaConfig",
    "Params",
    "StepOutput",
    "adapt",
    "algorithm_names",
    "batched_forward",
    "build_algorithm",
    "config_type",
    "inner_loop",
    "is_compression_param",
    "meta_config",
    "register_algorithm",
    "scope_filter",
    "task_accuracy",
    "task_loss",
]
