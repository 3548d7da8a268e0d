"""Sinusoid regression as in the MAML paper (Finn et al. 2017, figure 2): 10-shot MAML against a
network pretrained on all tasks, scored by query MSE after 0, 1 and 10 inner gradient steps.

Both start from the same MLP (1 -> 40 -> 40 -> 1). MAML meta-trains with 1 inner step (lr 0.01);
the baseline regresses points of random sinusoids with plain Adam (it learns the mean curve). At test
time both adapt on 10 points with the same inner loop (SGD, lr 0.01), on the same 600 seeded tasks.

    nice python benchmarks/sinusoid.py                 # writes benchmarks/results/sinusoid.json
    nice python benchmarks/sinusoid.py --steps 500     # quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.data.sinusoid import SinusoidSampler
from fewbit.evaluation import evaluate
from fewbit.meta import build_algorithm
from fewbit.train import load_config, meta_train
from fewbit.train.run import Run, build_model

INNER_STEPS = (0, 1, 10)


def pretrain(config: Any, steps: int, meta_batch: int, seed: int) -> torch.nn.Module:
    """The 'pretrained on all tasks' baseline: one regressor fitted to points of many random sinusoids."""
    torch.manual_seed(seed)
    model = build_model(config, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    sampler = SinusoidSampler(
        shots=config.shots, queries=config.queries, generator=torch.Generator().manual_seed(seed)
    )
    for _ in range(steps):
        task = sampler.sample(meta_batch)
        x = torch.cat([task.support_x, task.query_x], 1).reshape(-1, 1)  # [tasks*points, 1]
        y = torch.cat([task.support_y, task.query_y], 1).reshape(-1, 1)
        loss = (model(x) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def score(run: Run, inner_steps: int, tasks: int, queries: int) -> dict[str, float]:
    """Query MSE after `inner_steps` steps of the run's inner loop, over the seeded test tasks."""
    meta = dataclasses.replace(run.config.meta, eval_inner_steps=inner_steps)
    adapted = dataclasses.replace(run, algorithm=build_algorithm(meta))
    result = evaluate(adapted.predictor(), None, shots=run.config.shots, queries=queries, tasks=tasks)
    return {"mse": result.value, "ci95": result.ci95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15000, help="meta-training steps (and baseline steps)")
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--queries", type=int, default=100, help="query points per test task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/fewbit-bench/sinusoid")
    parser.add_argument("--out", default="benchmarks/results/sinusoid.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(
        None,
        dataset="sinusoid",
        algorithm="maml",
        shots=10,
        queries=10,
        meta_batch=args.meta_batch,
        inner_steps=1,
        inner_lr=0.01,
        outer_lr=1e-3,
        steps=args.steps,
        val_every=max(1, args.steps // 5),
        val_tasks=100,
        checkpoint_every=max(1, args.steps // 5),
        seed=0,
        device="cpu",
    )
    run_dir = Path(args.workdir)
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    maml = meta_train(config, run_dir, progress=True)
    maml_seconds = time.perf_counter() - start
    start = time.perf_counter()
    baseline_model = pretrain(config, args.steps, args.meta_batch, seed=0)
    baseline_seconds = time.perf_counter() - start
    baseline = Run(config, baseline_model, maml.algorithm, {}, None)
    report: dict[str, Any] = {
        "benchmark": "sinusoid",
        "torch": torch.__version__,
        "threads": args.threads,
        "shots": 10,
        "test_tasks": args.tasks,
        "test_queries": args.queries,
        "steps": args.steps,
        "meta_batch": args.meta_batch,
        "inner_lr": 0.01,
        "train_seconds": {"maml": round(maml_seconds, 1), "pretrained": round(baseline_seconds, 1)},
        "mse": {"maml": {}, "pretrained": {}},
    }
    for k in INNER_STEPS:
        report["mse"]["maml"][str(k)] = score(maml, k, args.tasks, args.queries)
        report["mse"]["pretrained"][str(k)] = score(baseline, k, args.tasks, args.queries)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(f"10-shot sinusoid, {args.tasks} tasks; query MSE +- 95% CI after k inner steps (lr 0.01)")
    print(f"{'k':>3}  {'MAML':>16}  {'pretrained':>16}")
    for k in INNER_STEPS:
        m, p = report["mse"]["maml"][str(k)], report["mse"]["pretrained"][str(k)]
        print(f"{k:>3}  {m['mse']:8.3f} +- {m['ci95']:.3f}  {p['mse']:8.3f} +- {p['ci95']:.3f}")
    print(f"train seconds: MAML {maml_seconds:.0f}, pretrained {baseline_seconds:.0f}")


if __name__ == "__main__":
    main()
