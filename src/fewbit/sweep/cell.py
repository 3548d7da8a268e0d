"""One sweep cell: train (or compress post hoc), evaluate, measure size, latency and adaptation memory."""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.compress import calibrate, compress, size_report
from fewbit.data.episodes import EpisodeSampler
from fewbit.errors import ConfigError, FewbitFormatError, NotResumableError
from fewbit.evaluation import eval_tasks, evaluate
from fewbit.report.cost import adaptation_memory
from fewbit.sweep.grid import FLOAT_BITS, Cell, SweepConfig
from fewbit.train import TrainConfig, load_run, meta_train
from fewbit.train.run import eval_dataset, is_run_dir

RESULT_NAME = "result.json"


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.cell_id


def finished(root: Path, cell: Cell) -> dict[str, Any] | None:
    """The stored result of `cell`, or None when it has not finished."""
    path = cell_dir(root, cell) / RESULT_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged result is recomputed


def run_cell(sweep: SweepConfig, cell: Cell, root: Path, *, progress: bool = False) -> dict[str, Any]:
    """Run `cell` into its run dir under `root/cells/` and return (and store) its result row."""

    done = finished(root, cell)
    if done is not None:
        return done
    base = TrainConfig.from_dict(dict(sweep.base)).replace(algorithm=cell.algorithm)
    spec = cell.spec(sweep.act_bits)
    out = cell_dir(root, cell)
    started = time.perf_counter()
    run_dir = out / "run"
    if cell.mode in ("float", "aware"):
        config = base.replace(compress=spec)
        if not _resumed(config, run_dir, progress):
            meta_train(config, run_dir, progress=progress)
    else:
        config = base.replace(compress=spec, steps=sweep.posthoc_finetune_steps)
        if not _resumed(config, run_dir, progress):
            reference = load_run(cell_dir(root, Cell(cell.algorithm, FLOAT_BITS, 0.0, "float")) / "run")
            model = compress(reference.model, spec)
            _calibrate(model, reference, sweep.calibration_batches, base.seed)
            meta_train(config, run_dir, model=model, progress=progress)
    train_seconds = time.perf_counter() - started
    run = load_run(run_dir)
    test = eval_dataset(base.dataset, "test", base, run.preprocessing, progress=False)
    result = evaluate(run.predictor(), test, ways=base.ways, shots=base.shots, queries=sweep.eval_queries,
                      tasks=sweep.eval_tasks, device=run.device)
    size = size_report(run.model).to_dict()
    latency = _latency_ms(run, test, base, sweep.latency_tasks)
    memory = _adaptation_memory(run, test, base)
    row = {
        "cell": cell.cell_id,
        "label": cell.label,
        "algorithm": cell.algorithm,
        "bits": cell.bits,
        "sparsity": cell.sparsity,
        "mode": cell.mode,
        "spec": spec or "",
        "accuracy": result.value,
        "ci95": result.ci95,
        "tasks": result.tasks,
        "bytes": int(size["bytes"]),
        "float32_bytes": int(size["float32_bytes"]),
        "ratio": float(size["ratio"]),
        "adapt_latency_ms": latency,
        "adapt_memory_bytes": memory["total_bytes"],
        "adapt_scope": memory["scope"],
        "train_seconds": round(train_seconds, 1),
    }
    atomic_write_json(out / RESULT_NAME, row)
    return row


def _resumed(config: Any, run_dir: Path, progress: bool) -> bool:
    """Continue a cell that a killed sweep left half-trained; False when it cannot, after moving
    the old run aside (`run.stale-<time>`, with a warning) so that nothing trained is deleted.

    A run that another process is training (InUseError) is left alone and the error raised.
    """

    if not run_dir.exists():
        return False
    if is_run_dir(run_dir):
        try:
            meta_train(config, run_dir, progress=progress, resume=True)
            return True
        except NotResumableError:
            meta_train(config, run_dir, progress=progress, resume=True, restart=True)  # keeps the old files
            return True
        except (ConfigError, FewbitFormatError) as exc:  # written with other settings, or not a run
            reason = str(exc)
    else:
        reason = "it is not a run directory"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stale = run_dir.with_name(f"{run_dir.name}.stale-{stamp}")
    os.replace(run_dir, stale)
    warnings.warn(f"sweep cell {run_dir.parent.name}: cannot continue its run ({reason[:200]}); "
                  f"it moved to {stale} and trains again", stacklevel=2)
    return False


def _calibrate(model: torch.nn.Module, reference: Any, batches: int, seed: int) -> None:
    """Post-training calibration: a few training tasks set the freshly compressed model's activation scales."""

    cfg = reference.config
    train = eval_dataset(cfg.dataset, "train", cfg, reference.preprocessing, progress=False)
    if train is None or batches == 0:
        return
    sampler = EpisodeSampler(train, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
                             generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    images = []
    for _ in range(batches):
        task = sampler.sample(1).to(device)
        images.append(torch.cat([task.support_x[0], task.query_x[0]]))
    calibrate(model, images)


def _latency_ms(run: Any, test: Any, config: Any, n: int) -> float:
    """Median milliseconds to adapt to one task and predict its queries."""

    predict = run.predictor()
    times = []
    for i, task in enumerate(eval_tasks(test, ways=config.ways, shots=config.shots, queries=config.queries,
                                        tasks=n, seed=99, batch=1)):  # drawn one at a time, never all held
        task = task.to(run.device)
        if i == 0:
            predict(task)  # warm-up
        t0 = time.perf_counter()
        predict(task)
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 2)


def _adaptation_memory(run: Any, test: Any, config: Any) -> dict[str, Any]:

    example = torch.zeros(config.ways * config.shots, *run.input_shape, device=run.device)
    return adaptation_memory(run.model, run.algorithm.test_scope, example).to_dict()
