"""The evaluation protocol: a fixed, seeded list of test tasks scored with a 95% interval."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

import fewbit.runtime as rt
from fewbit.config import brief
from fewbit.data.dataset import ImageDataset
from fewbit.data.episodes import EpisodeSampler
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.data.task import Task
from fewbit.errors import LimitError, shown
from fewbit.report.metrics import mean_ci

# A predictor takes a batch of tasks and returns query predictions: logits
# [tasks, N*Q, ways] for classification, values [tasks, Q, 1] for regression.
Predictor = Callable[[Task], torch.Tensor]

DEFAULT_EVAL_SEED = 1234
# Documented limit (docs/bad-input.md): the tasks one evaluation or validation scores. 600 is the
# field's custom; 100,000 gives a 95% interval a few hundredths of a point wide.
MAX_TASKS = 100_000
# Examples (support + queries) of the tasks scored at once: the bound of one training step
# (fewbit.train.config.MAX_STEP_IMAGES, which imports this module); larger lists are drawn in batches.
MAX_EVAL_EXAMPLES = 100_000
EVAL_BATCH = 25  # tasks drawn at once when they are small


def eval_batch(ways: int, shots: int, queries: int, most: int = EVAL_BATCH) -> int:
    """How many tasks of `ways * (shots + queries)` examples to draw and score at once: at most
    `most`, and never more examples than MAX_EVAL_EXAMPLES (at least one task)."""
    return max(1, min(most, MAX_EVAL_EXAMPLES // max(1, ways * (shots + queries))))


def check_task_count(value: Any, what: str = "tasks", error: type[Exception] = LimitError) -> int:
    """`value` as a task count (an int in 1..MAX_TASKS), else `error` naming `what` (when given).
    Every flag and config field that takes a number of tasks (`eval --tasks`, `train --val-tasks`,
    `sweep --eval-tasks`, `TrainConfig.val_tasks`, `SweepConfig.eval_tasks` and `latency_tasks`)
    and `evaluate`/`evaluate_artifact` check it here."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TASKS:
        prefix = f"{what}: " if what else ""
        raise error(f"{prefix}must be a number of tasks in 1..{MAX_TASKS:,}, got {shown(brief(value), 60)}")
    return value


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Accuracy (or MSE) over `tasks` test tasks with its 95% interval and per-task values."""

    metric: str  # "accuracy" or "mse"
    value: float
    ci95: float
    tasks: int
    ways: int
    shots: int
    queries: int
    per_task: tuple[float, ...]

    @property
    def accuracy(self) -> float:
        return self.value

    def to_dict(self, per_task: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            self.metric: self.value,
            "ci95": self.ci95,
            "tasks": self.tasks,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
        }
        if per_task:
            out["per_task"] = list(self.per_task)
        return out

    def __str__(self) -> str:
        if self.metric == "accuracy":
            return (
                f"{self.ways}-way {self.shots}-shot accuracy {100 * self.value:.2f}% "
                f"+- {100 * self.ci95:.2f}% over {self.tasks} tasks"
            )
        return f"{self.shots}-shot MSE {self.value:.4f} +- {self.ci95:.4f} over {self.tasks} tasks"


def eval_tasks(
    dataset: ImageDataset | None,
    *,
    ways: int,
    shots: int,
    queries: int,
    tasks: int,
    seed: int = DEFAULT_EVAL_SEED,
    batch: int = EVAL_BATCH,
) -> Iterator[Task]:
    """The fixed list of `tasks` test tasks for `seed`, in batches (same seed -> same tasks).

    `dataset=None` means sinusoid regression. LimitError when `tasks` is beyond MAX_TASKS.
    """
    check_task_count(tasks)
    if dataset is not None and dataset.num_classes == ways and tasks > 1:
        warnings.warn(
            f"{dataset.name} holds exactly {ways} classes: every {ways}-way test task draws the same classes, so "
            "the 95% interval measures the choice of images, not new classes; give the split more classes "
            "(--split-fractions, or more groups) or score fewer ways", stacklevel=3)
    g = torch.Generator().manual_seed(seed)
    sampler: EpisodeSampler | SinusoidSampler
    if dataset is None:
        sampler = SinusoidSampler(shots=shots, queries=queries, generator=g)
    else:
        sampler = EpisodeSampler(dataset, ways=ways, shots=shots, queries=queries, generator=g)
    return _batches(sampler, tasks, batch)


def _batches(sampler: EpisodeSampler | SinusoidSampler, tasks: int, batch: int) -> Iterator[Task]:
    done = 0
    while done < tasks:
        n = min(batch, tasks - done)
        yield sampler.sample(n)
        done += n


def evaluate(
    predictor: Predictor,
    dataset: ImageDataset | None,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    tasks: int = 600,
    seed: int = DEFAULT_EVAL_SEED,
    batch: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Score `predictor` on the seeded test tasks of `dataset` (None: sinusoid regression);
    LimitError when `tasks` is beyond MAX_TASKS. Tasks are drawn `batch` at a time (default
    `eval_batch`: 25, fewer when they are large), so any number of tasks is scored within the bound.

        >>> run = fewbit.train.load_run("runs/glyphs-w4a8")
        >>> evaluate(run.predictor(), load_source("glyphs").split("test"), ways=20, shots=1, tasks=600)
    """
    per_task: list[float] = []
    regression = dataset is None
    batch = eval_batch(1 if regression else ways, shots, queries) if batch is None else batch
    batches = eval_tasks(dataset, ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed, batch=batch)
    bar = tqdm(total=tasks, desc="evaluate", disable=not progress, leave=False)
    for task in batches:
        task = task.to(device)
        out = predictor(task)
        if regression:
            values = (out - task.query_y).pow(2).flatten(1).mean(1)
        else:
            values = (out.argmax(-1) == task.query_y).float().mean(1)
        per_task.extend(values.detach().cpu().tolist())
        bar.update(task.num_tasks)
        if not regression:
            bar.set_postfix(acc=f"{sum(per_task) / len(per_task):.3f}")
    bar.close()
    stats = mean_ci(per_task)
    return EvalResult(
        metric="mse" if regression else "accuracy",
        value=stats.mean,
        ci95=stats.ci95,
        tasks=len(per_task),
        ways=0 if regression else ways,
        shots=shots,
        queries=queries,
        per_task=tuple(per_task),
    )


def pixel_prototypes(task: Task) -> torch.Tensor:
    """A baseline predictor: nearest class mean in raw pixel space (no learning)."""
    ways = task.ways
    s = task.support_x.flatten(2)  # [tasks, N*K, D]
    q = task.query_x.flatten(2)  # [tasks, N*Q, D]
    onehot = torch.nn.functional.one_hot(task.support_y, ways).to(s.dtype)  # [tasks, N*K, N]
    protos = onehot.transpose(1, 2) @ s / onehot.sum(1).unsqueeze(-1)  # [tasks, N, D]
    return -torch.cdist(q, protos).pow(2)


def evaluate_artifact(
    model: Any,
    dataset: Any,
    *,
    ways: int = 5,
    shots: int = 1,
    queries: int = 15,
    tasks: int = 600,
    seed: int = DEFAULT_EVAL_SEED,
    batch: int | None = None,
    progress: bool = False,
    **adapt_options: Any,
) -> EvalResult:
    """Score an artifact in the numpy runtime (what ships) on the seeded test tasks of `dataset`.

    The same task list as `evaluate` for the same seed; each task is adapted to and classified by
    `fewbit.runtime.adapt` (with `adapt_options`, e.g. `norm_stats="support"`). `dataset` must be
    prepared as the artifact says (its image size, channels and normalisation). Tasks are drawn
    `batch` at a time (fewer for large tasks); LimitError when `tasks` is beyond MAX_TASKS.

        >>> model = fewbit.runtime.load("omniglot-conv4-w4")
        >>> evaluate_artifact(model, test_split, ways=5, shots=1, tasks=600)
    """

    per_task: list[float] = []
    batch = eval_batch(ways, shots, queries) if batch is None else batch
    batches = eval_tasks(dataset, ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed, batch=batch)
    bar = tqdm(total=tasks, desc="evaluate", disable=not progress, leave=False)
    for drawn in batches:
        for t in range(drawn.num_tasks):
            sx, sy = drawn.support_x[t].numpy(), drawn.support_y[t].numpy()
            qx, qy = drawn.query_x[t].numpy(), drawn.query_y[t].numpy()
            predicted = rt.adapt(model, sx, sy, **adapt_options).predict(qx)
            per_task.append(float((predicted == qy).mean()))
        bar.update(drawn.num_tasks)
        bar.set_postfix(acc=f"{sum(per_task) / len(per_task):.3f}")
    bar.close()
    stats = mean_ci(per_task)
    return EvalResult("accuracy", stats.mean, stats.ci95, len(per_task), ways, shots, queries, tuple(per_task))
