"""The fine-tune baseline of "A Closer Look at Few-shot Classification" (Chen et al. 2019).

Training is plain supervised learning over all training classes (linear: "Baseline", cosine:
"Baseline++"); at test time the backbone is frozen and a new head is fitted on each task's
support set with the shared inner loop (`finetune_steps` full-batch steps, batched over tasks).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fewbit.config import brief, check, setting
from fewbit.data.task import Task
from fewbit.errors import ConfigError
from fewbit.meta.base import OWNER, Algorithm, Deployment, MetaConfig, Params, StepOutput, check_positive, check_steps
from fewbit.meta.inner import inner_loop, task_accuracy, task_loss
from fewbit.meta.protonet import embed_tasks, prototypes
from fewbit.meta.registry import register_algorithm

CLASSIFIERS = ("linear", "cosine")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig(MetaConfig):
    """The fine-tune baseline's settings: the classifier, and the head fitted per task at test time."""

    algorithm: str = "finetune"
    finetune_classifier: str = setting("linear", "linear (Baseline) or cosine (Baseline++)", choices=CLASSIFIERS)
    finetune_steps: int = setting(100, "gradient steps fitting a new head per support set")
    finetune_lr: float = setting(0.1, "their learning rate")
    cosine_scale: float = setting(10.0, "logit scale of the cosine classifier")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self, "finetune_steps")
        check_positive(self, "finetune_lr")
        check_positive(self, "cosine_scale")
        check(self.finetune_classifier in CLASSIFIERS, OWNER, "finetune_classifier",
              f"unknown classifier {brief(self.finetune_classifier)}; choose one of {', '.join(CLASSIFIERS)}")


@register_algorithm("finetune", config=FinetuneConfig)
class Finetune(Algorithm):
    """Supervised pre-training, then a new linear or cosine head per task (backbone frozen)."""

    episodic = False
    uses_trained_head = False  # a new head is fitted per task: any number of ways

    @property
    def test_scope(self) -> str:
        return "head"

    def deployment(self, model: nn.Module, extras: Params | None = None, scope: str | None = None) -> Deployment:
        """A new head fitted on the joint embedding of support and query, `finetune_steps` steps of
        `finetune_lr` from zeros (linear) or from the prototypes (cosine: its class means start it)."""
        init = "prototypes" if self.config.finetune_classifier == "cosine" else "zeros"
        return Deployment({"method": "sgd", "embed": "joint", "scope": scope or "head",
                           "steps": int(self.config.finetune_steps), "lr": float(self.config.finetune_lr),
                           "head_init": init})

    def classify(self, head: Params, z: torch.Tensor) -> torch.Tensor:
        """Logits of the configured classifier; `head.weight [.., ways, D]`, z `[.., n, D]`."""
        w = head["head.weight"]
        if self.config.finetune_classifier == "cosine":
            return self.config.cosine_scale * F.normalize(z, dim=-1) @ F.normalize(w, dim=-1).transpose(-1, -2)
        return z @ w.transpose(-1, -2) + head["head.bias"].unsqueeze(-2)

    def step_supervised(
        self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, extras: Params | None = None
    ) -> StepOutput:
        """Cross-entropy over global labels `y [B]` with the model's head (`num_train_classes` outputs)."""
        z = functional_call(model, params, (x,), {"embed": True})  # [B, D]
        head = {n: params[n] for n in ("head.weight", "head.bias") if n in params}
        logits = self.classify(head, z.unsqueeze(0))  # [1, B, classes]
        return StepOutput(task_loss(logits, y.unsqueeze(0)).mean(), task_accuracy(logits, y.unsqueeze(0)),
                          logits=logits[0])

    def predict(self, model: nn.Module, params: Params, task: Task, extras: Params | None = None) -> torch.Tensor:
        """Fit a new head on each support set (backbone frozen) and score the queries."""
        if task.ways < 1:
            raise ConfigError("MetaConfig.algorithm: finetune needs a classification task (ways >= 1)")
        with torch.no_grad():
            n_support = task.support_x.shape[1]
            x = torch.cat([task.support_x, task.query_x], 1)
            z = embed_tasks(model, {n: p.detach() for n, p in params.items()}, x, self.config.batched)
            z_support, z_query = z[:, :n_support], z[:, n_support:]  # [tasks, n, D]
            tasks, dim = z.shape[0], z.shape[-1]
            if self.config.finetune_classifier == "cosine":  # start from the class means (a good init)
                weight = prototypes(z_support, task.support_y, task.ways)
            else:
                weight = z.new_zeros(tasks, task.ways, dim)
            head = {"head.weight": weight, "head.bias": z.new_zeros(tasks, task.ways)}
            head = inner_loop(
                self.classify,
                head,
                z_support,
                task.support_y,
                steps=self.config.finetune_steps,
                lr=self.config.finetune_lr,
            )
            return self.classify(head, z_query)

    def step(
        self, model: nn.Module, params: Params, task: Task, extras: Params | None = None, *,
        outer_step: int | None = None,
    ) -> StepOutput:
        """Episodic validation: the query loss of `predict` (not a training objective; detached)."""
        out = self.predict(model, params, task, extras)
        return StepOutput(task_loss(out, task.query_y).mean(), task_accuracy(out, task.query_y))
