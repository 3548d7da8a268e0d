"""What support-set BatchNorm statistics cost in accuracy: the numpy runtime on the same test tasks
with `norm_stats="batch"` (the artifact's own mode: ProtoNet embeds support and queries as one
batch, ANIL the queries as their own batch) and `norm_stats="support"` (statistics of the support
set, frozen, each query alone: what the exported C code does).

Conv-4 with 4-bit weights and 8-bit activations is meta-trained on Omniglot minimal (small1) for a
fixed number of steps, exported, and scored on seeded 5-way tasks from the small2 alphabets.
Reports each mode's accuracy +- 95% CI and the paired difference per task.

    nice python benchmarks/support_stats.py --data /work/shared/data/omniglot
    nice python benchmarks/support_stats.py --steps 100 --tasks 200      # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "support_stats.json"
ALGORITHMS: dict[str, dict[str, Any]] = {
    "protonet": {"algorithm": "protonet", "meta_batch": 4},
    "anil": {"algorithm": "anil", "scope": "head", "meta_batch": 4, "inner_steps": 5, "inner_lr": 0.4},
}
COMMON: dict[str, Any] = {
    "backbone": "conv4",
    "compress": "quant:w4a8",
    "ways": 5,
    "shots": 1,
    "queries": 10,
    "rotations": True,
    "outer_lr": 1e-3,
    "val_every": 0,
    "checkpoint_every": 0,
    "seed": 0,
    "device": "cpu",
}


def ci95(values: np.ndarray) -> float:
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def score(artifact: Path, test: Any, shots: int, tasks: int) -> dict[str, Any]:
    """Per-task accuracies of both modes on the same seeded tasks."""
    import fewbit.runtime as rt
    from fewbit.evaluation import eval_tasks

    model = rt.load(artifact)
    per_mode: dict[str, list[float]] = {"batch": [], "support": []}
    started = time.perf_counter()
    for batch in eval_tasks(test, ways=5, shots=shots, queries=15, tasks=tasks):
        for t in range(batch.support_x.shape[0]):
            sx, sy = batch.support_x[t].numpy(), batch.support_y[t].numpy()
            qx, qy = batch.query_x[t].numpy(), batch.query_y[t].numpy()
            for mode in per_mode:
                pred = rt.adapt(model, sx, sy, norm_stats=mode).predict(qx)
                per_mode[mode].append(float((pred == qy).mean()))
    acc = {m: np.asarray(v) for m, v in per_mode.items()}
    diff = acc["support"] - acc["batch"]
    return {
        "tasks": len(diff),
        "batch": {"accuracy": float(acc["batch"].mean()), "ci95": ci95(acc["batch"])},
        "support": {"accuracy": float(acc["support"].mean()), "ci95": ci95(acc["support"])},
        "support_minus_batch": {"mean": float(diff.mean()), "ci95": ci95(diff)},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    from fewbit.deploy import export
    from fewbit.train import load_config, load_run, meta_train
    from fewbit.train.run import eval_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/omniglot")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = f"omniglot-minimal:{args.data}" if Path(args.data).is_dir() else "glyphs"
    test = eval_dataset(spec, "test")
    result: dict[str, Any] = {
        "benchmark": "support_stats",
        "dataset": spec,
        "machine": {"cpu": platform.processor() or platform.machine(), "loadavg_before": os.getloadavg()},
        "settings": {**COMMON, "steps": args.steps, "eval": "5-way, 15 queries per class, numpy runtime"},
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.algorithms.split(","):
            settings = {**COMMON, **ALGORITHMS[name], "steps": args.steps}
            run_dir = Path(tmp) / name
            started = time.perf_counter()
            config = load_config(None, dataset=spec, **settings)
            meta_train(config, run_dir, progress=False)
            train_seconds = time.perf_counter() - started
            run = load_run(run_dir, device="cpu")
            path = Path(tmp) / f"{name}.fewbit"
            export(run.model, path, algorithm=config.algorithm, meta=config.meta)
            entry: dict[str, Any] = {"algorithm": name, "train_seconds": round(train_seconds, 1), "eval": {}}
            for shots in (1, 5):
                entry["eval"][f"5way_{shots}shot"] = scores = score(path, test, shots, args.tasks)
                b, s, d = scores["batch"], scores["support"], scores["support_minus_batch"]
                print(
                    f"{name} {shots}-shot: batch {100 * b['accuracy']:.2f} +- {100 * b['ci95']:.2f}%, "
                    f"support {100 * s['accuracy']:.2f} +- {100 * s['ci95']:.2f}%, "
                    f"difference {100 * d['mean']:+.2f} +- {100 * d['ci95']:.2f} points ({scores['tasks']} tasks)",
                    flush=True,
                )
            result["results"].append(entry)
    result["machine"]["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
