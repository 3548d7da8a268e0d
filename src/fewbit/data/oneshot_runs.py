"""The official Omniglot 20-way within-alphabet one-shot runs: read them, and score a model on them.

Each run is a folder `runNN/` holding `training/classKK.png` (one support image per class),
`test/itemMM.png` (the queries) and `class_labels.txt`, whose lines read
`runNN/test/itemMM.png runNN/training/classKK.png`: a query, then the support image of its class,
both relative to the folder holding `runNN/`. A run's error is the percent of queries matched to
the wrong support image; the reported figure is the mean over runs.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fewbit.data.episodes import images_to_tensor
from fewbit.data.omniglot import Archive, decode_image, open_archive
from fewbit.data.task import Task
from fewbit.errors import ConfigError, DataError

RUN_LABELS = "class_labels.txt"
MODES = ("embedding", "classifier")
RUNS_HELP = "give the folder or zip holding run01..run20, each with class_labels.txt, training/ and test/"


@dataclasses.dataclass(frozen=True, eq=False)
class OneShotRun:
    """One run: match each query to the one support image of its class.

    `support_x [n_support, 1, H, W]` and `query_x [n_query, 1, H, W]` are float with strokes = 1;
    `answers [n_query]` (int64) is the index in `support_x` of each query's correct support image.
    """

    name: str
    support_x: torch.Tensor
    query_x: torch.Tensor
    answers: torch.Tensor
    support_names: tuple[str, ...]
    query_names: tuple[str, ...]

    @property
    def ways(self) -> int:
        return int(self.support_x.shape[0])

    def as_task(self) -> Task:
        """The run as a batch of one N-way 1-shot Task (support image i is class i)."""
        support_y = torch.arange(self.ways, dtype=torch.int64)
        return Task(
            self.support_x.unsqueeze(0),  # [1, ways, 1, H, W]
            support_y.unsqueeze(0),
            self.query_x.unsqueeze(0),  # [1, n_query, 1, H, W]
            self.answers.unsqueeze(0),
            self.ways,
        )


def read_runs(root: Path, *, image_size: int = 28) -> list[OneShotRun]:
    """Every run (a folder holding `class_labels.txt`) in the folder or zip `root`, sorted by path.

    `root` may also be a single run folder. Images are resized to `image_size` and inverted so
    that strokes = 1.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 256:
        raise DataError(f"image size {image_size!r} is out of range; use a whole number of pixels, 8..256")
    with open_archive(root, what=RUNS_HELP) as archive:
        run_dirs = sorted(posixpath.dirname(n) for n in archive.names if posixpath.basename(n) == RUN_LABELS)
        if not run_dirs:
            raise DataError(f"{archive.path} holds no {RUN_LABELS}; {RUNS_HELP}")
        names = set(archive.names)
        return [_read_run(archive, names, run_dir, image_size) for run_dir in run_dirs]


def score_runs(
    runs: Sequence[OneShotRun],
    predict: Callable[..., torch.Tensor],
    *,
    mode: str = "embedding",
    device: torch.device | str | None = None,
) -> dict[str, object]:
    """Error percent of `predict` on each run and their mean (`mean_error_percent`).

    `mode` says what `predict` is; it is never guessed from its signature:
    - `"embedding"`: `predict(x [n, 1, H, W]) -> [n, d]`, called once on the support images and once
      on the queries (under `torch.no_grad`); each query takes its nearest support by Euclidean distance.
    - `"classifier"`: `predict(support_x, query_x) -> scores [n_query, n_support]`, higher = more
      likely; each query takes its highest-scoring support. Gradients stay on, so it may adapt.
    Inputs are moved to `device` when given. Put a model in eval mode before scoring.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not runs:
        raise DataError(f"no one-shot runs to score; {RUNS_HELP}")
    errors = []
    for run in runs:
        support_x, query_x = run.support_x.to(device), run.query_x.to(device)
        n_support, n_query = support_x.shape[0], query_x.shape[0]
        if mode == "embedding":
            with torch.no_grad():
                support_emb = _embed(predict, support_x)  # [n_support, d]
                query_emb = _embed(predict, query_x)  # [n_query, d]
            if support_emb.shape[1] != query_emb.shape[1]:
                widths = (support_emb.shape[1], query_emb.shape[1])
                raise ValueError(f"{run.name}: support and query embeddings differ in width {widths}")
            guess = torch.cdist(query_emb.float(), support_emb.float()).argmin(dim=1)  # [n_query]
        else:
            scores = predict(support_x, query_x)
            if tuple(scores.shape) != (n_query, n_support):
                raise ValueError(
                    f"{run.name}: the classifier returned scores {tuple(scores.shape)}, "
                    f"expected [n_query, n_support] = {(n_query, n_support)}"
                )
            guess = scores.detach().argmax(dim=1)
        wrong = (guess.cpu() != run.answers.cpu()).to(torch.float64).mean().item()
        errors.append(100.0 * wrong)
    return {
        "mode": mode,
        "num_runs": len(runs),
        "run_names": [run.name for run in runs],
        "error_percent_per_run": errors,
        "mean_error_percent": float(np.mean(errors)),
    }


def _embed(predict: Callable[..., torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    out = predict(x)
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the embedding function returned {got} for {x.shape[0]} images; expected [n, d]")
    return out.reshape(x.shape[0], -1)


def _read_run(archive: Archive, names: set[str], run_dir: str, image_size: int) -> OneShotRun:
    labels_name = posixpath.join(run_dir, RUN_LABELS)
    run_name = run_dir or archive.path.stem
    training = posixpath.join(run_dir, "training") + "/"
    support_names = sorted(
        n
        for n in names
        if n.startswith(training) and "/" not in n[len(training) :] and n.lower().endswith(".png")
    )
    if not support_names:
        raise DataError(f"{archive.where(training)} holds no support images (.png); {RUNS_HELP}")
    support_index = {n: i for i, n in enumerate(support_names)}
    try:
        text = archive.read(labels_name).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{archive.where(labels_name)} is not text; {RUNS_HELP}") from None
    query_names, answers = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        at = f"{archive.where(labels_name)} line {line_no}"
        if len(fields) != 2:
            raise DataError(f"{at}: expected '<query.png> <support.png>', got {line.strip()!r}")
        query = _resolve(fields[0], run_dir, names)
        support = _resolve(fields[1], run_dir, names)
        if query is None:
            raise DataError(f"{at}: query image {fields[0]} is missing")
        if support not in support_index:
            raise DataError(f"{at}: {fields[1]} is not a support image in {training}")
        query_names.append(query)
        answers.append(support_index[support])
    if not query_names:
        raise DataError(f"{archive.where(labels_name)} lists no queries; {RUNS_HELP}")

    def load(image_names: list[str]) -> torch.Tensor:
        images = np.stack(
            [
                decode_image(archive.read(n), image_size=image_size, where=archive.where(n))
                for n in image_names
            ]
        )
        return images_to_tensor(images)  # [n, 1, H, W], strokes = 1

    return OneShotRun(
        name=run_name,
        support_x=load(support_names),
        query_x=load(query_names),
        answers=torch.tensor(answers, dtype=torch.int64),
        support_names=tuple(support_names),
        query_names=tuple(query_names),
    )


def _resolve(listed: str, run_dir: str, names: set[str]) -> str | None:
    """The archive name of a path from class_labels.txt: relative to the run's parent, else to the run."""
    listed = listed.replace("\\", "/")
    candidates = [posixpath.join(posixpath.dirname(run_dir), listed)]
    if "/" in listed:  # a lone run folder given as root: drop the listed `runNN/`
        candidates.append(posixpath.join(run_dir, listed.split("/", 1)[1]))
    return next((c for c in candidates if c in names), None)
