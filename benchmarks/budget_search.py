"""The best few-shot model in N bytes: searched per-layer plans against the best uniform plan that fits.

For each budget, `fewbit.search.search` chooses per-layer bits and sparsity (Conv-4 on the Omniglot
minimal protocol: ProtoNet with the flags below, or the recipe a `--config` search file gives, as
configs/searches/omniglot.yaml gives the shipped models'), trains the winner from the start run's
weights and exports it; the `--uniform` uniform plans that fit (those of least estimated loss
increase) are trained and exported the same way from the same weights. Every artifact is then
scored in the numpy runtime on the same 600 seeded test tasks, 5-way and 20-way 1-shot (small2's
alphabets that small1 lacks), with each `--views` count; the uniform plan compared is the one with
the best validation accuracy (validation chooses). Writes one JSON file and the accuracy-vs-bytes plot.

    python benchmarks/budget_search.py --data /work/shared/data/omniglot --from runs/float800
    python benchmarks/budget_search.py --data DIR --config configs/searches/omniglot.yaml \
        --from runs/omniglot-float --out runs/omniglot-search --views 1,8   # the shipped models' search
    python benchmarks/budget_search.py --data DIR --budgets 24K --steps 100 --tasks 100   # short
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_bytes, atomic_write_json
from fewbit.config import load_yaml
from fewbit.errors import ConfigError
from fewbit.evaluation import evaluate_artifact
from fewbit.runtime import load
from fewbit.search import SearchConfig, search
from fewbit.search.search import RERANK_SEED, finished_search
from fewbit.train.run import eval_dataset

TRAIN: dict[str, Any] = {"backbone": "conv4", "algorithm": "protonet", "ways": 5, "shots": 1, "queries": 5,
                         "meta_batch": 4, "outer_lr": 1e-3, "schedule": "cosine", "rotations": True,
                         "val_every": 200, "val_tasks": 50, "checkpoint_every": 200, "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder holding images_background_small1/2.zip")
    parser.add_argument("--config", help="a SearchConfig YAML (configs/searches/omniglot.yaml: the Omniglot recipe); "
                                         "without it, Conv-4 ProtoNet with the flags below")
    parser.add_argument("--from", dest="from_run", help="start run (float ProtoNet); default: a pilot run")
    parser.add_argument("--budgets", help="default: the config's, or 12K,16K,24K,32K,48K")
    parser.add_argument("--steps", type=int, default=400, help="final training steps of every plan (no --config)")
    parser.add_argument("--rerank-steps", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--uniform", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=600, help="test tasks, 5-way 1-shot (15 queries a class)")
    parser.add_argument("--tasks-20way", type=int, default=600, help="test tasks, 20-way 1-shot (5 queries a class)")
    parser.add_argument("--views", default="1", help="test-time views scored, e.g. 1,8 (fewbit eval --views)")
    parser.add_argument("--bits", default="1,2,3,4,8")
    parser.add_argument("--sparsity", default="0,0.25,0.5,0.75,0.9")
    parser.add_argument("--patterns", default="unstructured,channel")
    parser.add_argument("--out", default="runs/budget_search",
                        help="the search folder; a finished search there of the same config is scored, not redone "
                             "(one of another config is refused)")
    parser.add_argument("--more-uniform", default="",
                        help="uniform plans trained apart from the search, as BUDGET=RUN_DIR,... (fewbit train "
                             "--init-from START --compress SPEC with the search's training settings): exported and "
                             "weighed by validation beside the search's own uniform plans")
    parser.add_argument("--json-out", default="benchmarks/results/budget_search.json")
    parser.add_argument("--plot-out", default="docs/budget_search.png", help="a copy of the frontier plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = f"omniglot-minimal:{args.data}"
    if args.config:
        data = load_yaml(args.config)
        data["train"] = {**data["train"], "dataset": dataset}
        if args.budgets:
            data.pop("budget", None)
            data["budgets"] = args.budgets
        config = SearchConfig.from_dict(data)
    else:
        config = SearchConfig.from_dict({
            "budgets": args.budgets or "12K,16K,24K,32K,48K", "episodes": args.episodes,
            "bits": [int(b) for b in args.bits.split(",")],
            "sparsity": [float(v) for v in args.sparsity.split(",")], "patterns": args.patterns.split(","),
            "top_k": args.top_k, "rerank_steps": args.rerank_steps,
            "uniform": args.uniform, "pilot_steps": 800,
            "train": {**TRAIN, "dataset": dataset, "steps": args.steps},
        })
    views = [int(v) for v in args.views.split(",")]
    try:
        record = finished_search(args.out, config, args.from_run)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    if record is None:
        search(config, args.out, from_run=args.from_run, log=lambda line: print(f"search: {line}", flush=True))
        record = json.loads((Path(args.out) / "search.json").read_text())
    else:
        print(f"scoring the finished search in {args.out}")
    test: dict[tuple[str, int, int], Any] = {}

    def scored(artifact: str) -> dict[str, Any]:
        model = load(artifact)
        out: dict[str, Any] = {"bytes": Path(artifact).stat().st_size}
        for ways, queries, tasks in ((5, 15, args.tasks), (20, 5, args.tasks_20way)):
            for v in views:
                key = (artifact, ways, v)
                if key not in test:
                    split = eval_dataset(config.train.dataset, "test", config.train, model.prep, progress=False)
                    test[key] = evaluate_artifact(model, split, ways=ways, shots=1, queries=queries, tasks=tasks,
                                                  views=v)
                r = test[key]
                name = f"{ways}way" + ("" if v == 1 else f"_views{v}")
                out[name] = {"accuracy": r.value, "ci95": r.ci95, "tasks": r.tasks, "queries": queries, "views": v}
        return out

    more = extra_uniform(args.more_uniform, config)

    def validated(u: dict[str, Any]) -> dict[str, Any]:
        """A uniform plan with its validation accuracy measured in the numpy runtime on the search's
        re-ranking tasks, so the search's and the extra plans are weighed on one scale."""
        model = load(u["artifact"])
        split = eval_dataset(config.train.dataset, "val", config.train, model.prep, progress=False)
        r = evaluate_artifact(model, split, ways=config.train.ways, shots=config.train.shots,
                              queries=config.train.queries, tasks=config.rerank_tasks, seed=RERANK_SEED + config.seed)
        return u | {"val_accuracy_numpy": r.value}

    rows = []
    for r in record["results"]:
        r["uniform"] = [validated(u) for u in [*r["uniform"], *more.get(r["budget"], [])]]
        best_uniform = max(r["uniform"], key=lambda u: u["val_accuracy_numpy"]) if r["uniform"] else None
        searched = validated({"spec": r["spec"], "val_accuracy": r["accuracy"], "artifact": r["artifact"]})
        row: dict[str, Any] = {"budget": r["budget"], "searched": {**searched, **scored(r["artifact"])},
                               "candidates": r["candidates"], "choose_seconds": r["choose_seconds"],
                               "train_seconds": r["train_seconds"]}
        if best_uniform is not None:
            row["best_uniform"] = {"spec": best_uniform["spec"], "label": best_uniform["label"],
                                   "val_accuracy_numpy": best_uniform["val_accuracy_numpy"],
                                   **scored(best_uniform["artifact"])}
            row["uniform_tried"] = [{k: u.get(k) for k in ("label", "spec", "bytes", "val_accuracy_numpy", "source")}
                                    for u in r["uniform"]]
            for name in row["searched"]:
                if name.startswith(("5way", "20way")):
                    row[f"gain_points_{name}"] = round(100 * (row["searched"][name]["accuracy"]
                                                              - row["best_uniform"][name]["accuracy"]), 2)
        rows.append(row)
        print(row["budget"], row["searched"]["bytes"], row["searched"]["5way"], row.get("best_uniform", {}).get("5way"))
    plot = None
    if record.get("plot"):
        plot = args.plot_out
        atomic_write_bytes(plot, Path(record["plot"]).read_bytes())
    atomic_write_json(args.json_out, {
        "benchmark": "budget_search", "machine": platform.machine(), "torch": torch.__version__,
        "search_seconds": record["seconds"], "tables_seconds": record["tables_seconds"],
        "start_seconds": record["start_seconds"], "from_run": args.from_run, "config": config.to_dict(),
        "sensitivity": record["sensitivity_method"], "rows": rows, "plot": plot,
        "notes": "accuracy: numpy runtime, test split, same seeded tasks for every artifact; "
                 "the uniform plan compared is the trained one with the best validation accuracy; "
                 "search_seconds: tables, choice, re-ranking and every final training of the search",
    })
    print(f"wrote {args.json_out}")


TRAINING_FIELDS = ("backbone", "algorithm", "batch_size", "steps", "outer_lr", "schedule", "rotations", "augment",
                   "seed", "meta", "data")  # what makes two trainings alike (a supervised recipe: queries do not)


def extra_uniform(text: str, config: SearchConfig) -> dict[int, list[dict[str, Any]]]:
    """`BUDGET=RUN_DIR,...` as uniform rows per budget: each run (trained with the search's training
    settings and a uniform spec) exported beside itself; SystemExit when its file is over the budget."""
    from fewbit.deploy.torch_export import export
    from fewbit.search.config import parse_budget
    from fewbit.train import load_run

    rows: dict[int, list[dict[str, Any]]] = {}
    for item in filter(None, text.split(",")):
        budget_text, _, run_dir = item.partition("=")
        budget = parse_budget(budget_text)
        run = load_run(run_dir, checkpoint="best", device="cpu")
        differ = [k for k in TRAINING_FIELDS if getattr(run.config, k) != getattr(config.train, k)]
        if differ:
            raise SystemExit(f"{run_dir} was not trained with the search's training settings ({', '.join(differ)})")
        artifact = Path(run_dir).with_suffix(".fewbit")
        info = export(run.model, artifact, **run.export_args())
        if info["bytes"] > budget:
            raise SystemExit(f"{run_dir}: its file is {info['bytes']:,} B, over {budget:,} B")
        label = Path(run_dir).name if Path(run_dir).name != "run" else Path(run_dir).parent.name
        rows.setdefault(budget, []).append({"label": label, "spec": run.config.compress, "bytes": info["bytes"],
                                            "artifact": str(artifact), "source": "trained apart"})
    return rows


if __name__ == "__main__":
    main()
