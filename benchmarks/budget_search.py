"""The best few-shot model in N bytes: searched per-layer plans against the best uniform plan that fits.

For each budget, `fewbit.search.search` chooses per-layer bits and sparsity (Conv-4 ProtoNet,
Omniglot minimal protocol), trains the winner from the start run's weights and exports it; the
`--uniform` uniform plans that fit (those of least estimated loss increase) are trained and
exported the same way from the same weights. Every artifact is then scored in the numpy runtime on
the same 600 seeded test tasks, 5-way and 20-way 1-shot (small2's alphabets that small1 lacks);
the uniform plan compared is the one with the best validation accuracy (validation chooses). Writes
one JSON file and the accuracy-vs-bytes plot.

    python benchmarks/budget_search.py --data /work/shared/data/omniglot --from runs/float800
    python benchmarks/budget_search.py --data DIR --budgets 24K --steps 100 --tasks 100   # short
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_bytes, atomic_write_json
from fewbit.evaluation import evaluate_artifact
from fewbit.runtime import load
from fewbit.search import SearchConfig, search
from fewbit.train.run import eval_dataset

TRAIN: dict[str, Any] = {"backbone": "conv4", "algorithm": "protonet", "ways": 5, "shots": 1, "queries": 5,
                         "meta_batch": 4, "outer_lr": 1e-3, "schedule": "cosine", "rotations": True,
                         "val_every": 200, "val_tasks": 50, "checkpoint_every": 200, "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder holding images_background_small1/2.zip")
    parser.add_argument("--from", dest="from_run", help="start run (float ProtoNet); default: a pilot run")
    parser.add_argument("--budgets", default="12K,16K,24K,32K,48K")
    parser.add_argument("--steps", type=int, default=400, help="final training steps of every plan")
    parser.add_argument("--rerank-steps", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--uniform", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=600, help="test tasks, 5-way 1-shot (15 queries a class)")
    parser.add_argument("--tasks-20way", type=int, default=600, help="test tasks, 20-way 1-shot (5 queries a class)")
    parser.add_argument("--bits", default="1,2,3,4,8")
    parser.add_argument("--sparsity", default="0,0.25,0.5,0.75,0.9")
    parser.add_argument("--patterns", default="unstructured,channel")
    parser.add_argument("--out", default="runs/budget_search")
    parser.add_argument("--json-out", default="benchmarks/results/budget_search.json")
    parser.add_argument("--plot-out", default="docs/budget_search.png", help="a copy of the frontier plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SearchConfig.from_dict({
        "budgets": args.budgets, "episodes": args.episodes, "bits": [int(b) for b in args.bits.split(",")],
        "sparsity": [float(v) for v in args.sparsity.split(",")], "patterns": args.patterns.split(","),
        "top_k": args.top_k, "rerank_steps": args.rerank_steps,
        "uniform": args.uniform, "pilot_steps": 800,
        "train": {**TRAIN, "dataset": f"omniglot-minimal:{args.data}", "steps": args.steps},
    })
    started = time.perf_counter()
    result = search(config, args.out, from_run=args.from_run, log=lambda line: print(f"search: {line}", flush=True))
    search_seconds = time.perf_counter() - started
    test: dict[tuple[str, int], Any] = {}

    def scored(artifact: str) -> dict[str, Any]:
        model = load(artifact)
        out: dict[str, Any] = {}
        for ways, queries, tasks in ((5, 15, args.tasks), (20, 5, args.tasks_20way)):
            key = (artifact, ways)
            if key not in test:
                dataset = eval_dataset(config.train.dataset, "test", config.train, model.prep, progress=False)
                test[key] = evaluate_artifact(model, dataset, ways=ways, shots=1, queries=queries, tasks=tasks)
            r = test[key]
            out[f"{ways}way"] = {"accuracy": r.value, "ci95": r.ci95, "tasks": r.tasks, "queries": queries}
        return out

    rows = []
    for r in result.results:
        best_uniform = max(r.uniform, key=lambda u: u["accuracy"]) if r.uniform else None
        row: dict[str, Any] = {"budget": r.budget, "searched": {"spec": r.spec, "bytes": r.bytes,
                                                                 "val_accuracy": r.accuracy, **scored(r.artifact)},
                               "candidates": list(r.candidates)}
        if best_uniform is not None:
            row["best_uniform"] = {"spec": best_uniform["spec"], "label": best_uniform["label"],
                                   "bytes": best_uniform["bytes"], "val_accuracy": best_uniform["accuracy"],
                                   **scored(best_uniform["artifact"])}
            row["uniform_tried"] = [{k: u[k] for k in ("label", "spec", "bytes", "accuracy")} for u in r.uniform]
            for ways in ("5way", "20way"):
                row[f"gain_points_{ways}"] = round(100 * (row["searched"][ways]["accuracy"]
                                                          - row["best_uniform"][ways]["accuracy"]), 2)
        rows.append(row)
        print(row["budget"], row["searched"]["bytes"], row["searched"]["5way"], row.get("best_uniform", {}).get("5way"))
    plot = None
    if result.plot:
        plot = args.plot_out
        atomic_write_bytes(plot, Path(result.plot).read_bytes())
    atomic_write_json(args.json_out, {
        "benchmark": "budget_search", "machine": platform.machine(), "torch": torch.__version__,
        "threads": 1, "search_and_training_seconds": round(search_seconds, 1), "from_run": args.from_run,
        "config": config.to_dict(), "rows": rows, "plot": plot,
        "notes": "accuracy: numpy runtime, test split, same seeded tasks for every artifact; "
                 "the uniform plan compared is the trained one with the best validation accuracy",
    })
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
