"""Omniglot minimal protocol: Conv-4 meta-trained on images_background_small1, tested on 600 seeded
5-way tasks (1-shot and 5-shot) from the small2 alphabets that small1 lacks.

Each algorithm gets a training budget in minutes: a 3-step calibration run measures the time per step
on this (shared) machine and the step count is set to fit the budget, then recorded. The weights with
the best validation accuracy (held-out small1 characters) are scored. Writes one JSON file (updated
after every algorithm).

    nice python benchmarks/omniglot_minimal.py --data /work/shared/data/omniglot
    nice python benchmarks/omniglot_minimal.py --algorithms protonet --steps 100   # one, shorter
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.evaluation import evaluate
from fewbit.train import load_config, load_run, meta_train
from fewbit.train.run import eval_dataset

# Per-algorithm settings (the step count comes from the time budget).
ALGORITHMS: dict[str, dict[str, Any]] = {
    "protonet": {"algorithm": "protonet", "meta_batch": 4, "queries": 5},
    "fomaml": {
        "algorithm": "fomaml",
        "meta_batch": 8,
        "queries": 5,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "eval_inner_steps": 3,
    },
    "anil": {
        "algorithm": "anil",
        "scope": "head",
        "meta_batch": 8,
        "queries": 5,
        "inner_steps": 5,
        "inner_lr": 0.4,
        "eval_inner_steps": 10,
    },
    "finetune": {"algorithm": "finetune", "batch_size": 64, "finetune_steps": 50},
}
COMMON: dict[str, Any] = {
    "backbone": "conv4",
    "ways": 5,
    "shots": 1,
    "queries": 15,
    "rotations": True,
    "schedule": "cosine",
    "outer_lr": 1e-3,
    "val_tasks": 30,
    "checkpoint_every": 50,
    "seed": 0,
    "device": "cpu",
}
CALIBRATION_STEPS = 3
TARGETS = {"protonet": 0.95, "fomaml": 0.93, "maml": 0.93, "anil": 0.93, "metasgd": 0.93, "reptile": 0.93}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="/work/shared/data/omniglot", help="folder with the background-small zips"
    )
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument(
        "--minutes", type=float, default=6.0, help="training budget per algorithm (default 6)"
    )
    parser.add_argument("--steps", type=int, help="a fixed step count instead of the time budget")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument(
        "--workdir", default="/tmp/fewbit-bench/omniglot-minimal", help="run directories go here"
    )
    parser.add_argument("--out", default="benchmarks/results/omniglot_minimal.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = f"omniglot-minimal:{args.data}"
    test = eval_dataset(spec, "test")
    report: dict[str, Any] = {
        "benchmark": "omniglot_minimal",
        "dataset": spec,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "eval_tasks": args.tasks,
        "results": [],
    }
    names = args.algorithms.split(",")
    if Path(args.out).is_file():  # keep the other algorithms' figures from earlier invocations
        earlier = json.loads(Path(args.out).read_text())
        report["results"] = [r for r in earlier.get("results", []) if r.get("algorithm") not in names]
    for name in names:
        settings = {**COMMON, **ALGORITHMS.get(name, {"algorithm": name, "meta_batch": 8})}
        run_dir = Path(args.workdir) / name
        shutil.rmtree(run_dir, ignore_errors=True)
        if args.steps is not None:
            settings["steps"] = args.steps
            per_step = None
        else:
            per_step = calibrate(spec, settings, run_dir.with_name(f"{name}-calibration"))
            settings["steps"] = max(10, int(args.minutes * 60 * 0.85 / per_step))  # 15% for validation
        settings["val_every"] = max(1, settings["steps"] // 3)
        print(f"{name}: {settings['steps']} steps (calibrated {per_step} s/step)", flush=True)
        config = load_config(None, dataset=spec, **settings)
        start = time.perf_counter()
        meta_train(config, run_dir, progress=True)
        train_seconds = time.perf_counter() - start
        run = load_run(run_dir)
        entry: dict[str, Any] = {
            "algorithm": name,
            "steps": config.steps,
            "train_seconds": round(train_seconds, 1),
            "seconds_per_step": round(train_seconds / max(1, config.steps), 3),
            "best_val": run.best,
            "calibrated_seconds_per_step": per_step,
            "settings": settings,
            "eval": {},
        }
        for shots in (1, 5):
            start = time.perf_counter()
            result = evaluate(
                run.predictor(), test, ways=5, shots=shots, queries=15, tasks=args.tasks, progress=True
            )
            entry["eval"][f"5way_{shots}shot"] = {
                "accuracy": result.value,
                "ci95": result.ci95,
                "tasks": result.tasks,
                "eval_seconds": round(time.perf_counter() - start, 1),
            }
            print(f"{name}: {result}  ({entry['eval'][f'5way_{shots}shot']['eval_seconds']} s)", flush=True)
        target = TARGETS.get(name)
        if target is not None:
            got = entry["eval"]["5way_1shot"]["accuracy"]
            entry["target_1shot"] = target
            entry["missed_by"] = round(max(0.0, target - got), 4)
        entry["budget"] = f"{args.steps} fixed steps" if args.steps is not None else f"{args.minutes} minutes"
        report["results"].append(entry)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, report)
    print(
        json.dumps(
            [{k: r[k] for k in ("algorithm", "steps", "train_seconds", "eval")} for r in report["results"]],
            indent=1,
        )
    )


def calibrate(spec: str, settings: dict[str, Any], run_dir: Path) -> float:
    """Seconds per training step on this machine now (a few steps after one warm-up step)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    quick = {**settings, "steps": 1, "val_every": 0, "checkpoint_every": 0}
    meta_train(load_config(None, dataset=spec, **quick), run_dir, progress=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    quick["steps"] = CALIBRATION_STEPS
    start = time.perf_counter()
    meta_train(load_config(None, dataset=spec, **quick), run_dir, progress=False)
    seconds = (time.perf_counter() - start) / CALIBRATION_STEPS
    shutil.rmtree(run_dir, ignore_errors=True)
    return round(seconds, 3)


if __name__ == "__main__":
    main()
