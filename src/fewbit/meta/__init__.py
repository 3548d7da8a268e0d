"""Meta-learning: the shared functional inner loop and the algorithms built on it.

`build_algorithm(MetaConfig(algorithm=...))` gives one of ALGORITHMS (maml fomaml metasgd
anil reptile protonet finetune); its `step` trains on a batched Task and its `predict`
adapts to each task's support set. `adapt(model, support)` wraps `predict` for users.
"""

from __future__ import annotations

from fewbit.meta.adapt import Adapted, adapt
from fewbit.meta.base import (
    ALGORITHMS,
    SCOPES,
    Algorithm,
    MetaConfig,
    Params,
    StepOutput,
    build_algorithm,
    register_algorithm,
)
from fewbit.meta.functional import batched_forward
from fewbit.meta.inner import inner_loop, task_accuracy, task_loss
from fewbit.meta.scopes import is_compression_param, scope_filter

__all__ = [
    "ALGORITHMS",
    "SCOPES",
    "Adapted",
    "Algorithm",
    "MetaConfig",
    "Params",
    "StepOutput",
    "adapt",
    "batched_forward",
    "build_algorithm",
    "inner_loop",
    "is_compression_param",
    "register_algorithm",
    "scope_filter",
    "task_accuracy",
    "task_loss",
]
