"""Does fitting the head on the support set at test time help a signals model on real series?

The shipped `signals-conv1d-w4` (trained on the generated `signals` family only) adapts with cosine
prototypes. The numpy runtime can instead take SGD steps on a linear head started from those
prototypes (`fewbit.runtime.adapt(..., method="sgd", head_init="prototypes")`, what `fewbit adapt
--steps --lr` does). Both are scored on the same seeded tasks of the one-channel UCR/UEA sets aeon's
wheel bundles (held out: never trained on), 1-shot and 5-shot. Needs the benchmark extra:

    pip install 'fewbit[signals-bench]'
    python benchmarks/signals_head_tuning.py          # -> benchmarks/results/signals_head_tuning.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import fewbit.runtime as rt
from fewbit._io import atomic_write_json
from fewbit.evaluation import evaluate_artifact

sys.path.insert(0, str(Path(__file__).resolve().parent))
from signals import aeon_data, held_out, prepared  # noqa: E402

SETS = ("ACSF1", "ArrowHead", "GunPoint", "ItalyPowerDemand", "OSULeaf", "PickupGestureWiimoteZ")
RULES: dict[str, dict[str, Any]] = {
    "prototypes": {},
    "sgd 20 steps, lr 0.1": {"method": "sgd", "steps": 20, "lr": 0.1, "head_init": "prototypes"},
    "sgd 50 steps, lr 0.5": {"method": "sgd", "steps": 50, "lr": 0.5, "head_init": "prototypes"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="signals-conv1d-w4", help="a shipped model's name or a .fewbit path")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--json-out", default="benchmarks/results/signals_head_tuning.json")
    args = parser.parse_args()
    model = rt.load(args.model)
    root = aeon_data()
    rows = []
    for name in SETS:
        data = prepared(held_out(name, root), model.prep, name)
        ways = min(5, data.num_classes)
        for shots in (1, 5):
            for rule, options in RULES.items():
                started = time.perf_counter()
                r = evaluate_artifact(model, data, ways=ways, shots=shots, queries=args.queries, tasks=args.tasks,
                                      **options)
                rows.append({"set": name, "ways": ways, "shots": shots, "rule": rule, "accuracy": r.value,
                             "ci95": r.ci95, "tasks": r.tasks, "seconds": round(time.perf_counter() - started, 1)})
                print(f"{name} {ways}-way {shots}-shot {rule}: {100 * r.value:.2f} +- {100 * r.ci95:.2f}%", flush=True)
    means = {f"{shots}-shot {rule}": round(100 * float(np.mean([r["accuracy"] for r in rows
                                                                  if r["shots"] == shots and r["rule"] == rule])), 2)
             for shots in (1, 5) for rule in RULES}
    print(means)
    atomic_write_json(args.json_out, {"benchmark": "signals_head_tuning", "model": args.model,
                                      "machine": platform.machine(), "rows": rows, "mean_percent": means})
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
