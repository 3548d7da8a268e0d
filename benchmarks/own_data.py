"""Own data: image folders read with `folder:`, side by side with fewbit's built-in readers.

1. A generated colour folder (classes differ by colour and texture): 5-way 1-shot accuracy +- 95% CI
   of Conv-4 ProtoNet, float32 and w4a8, on held-out classes.
2. Omniglot background small1, extracted to a temporary folder and read as `folder:` (group =
   alphabet, `--invert --no-normalize` so that the pixels are Omniglot's ink = 1): float32 and w4a8
   accuracy, and float32 trained again through `omniglot:` on the zip with the same seed: the same
   classes, the same tasks, so the two accuracies must be equal.
3. Decoding speed: images per second building the cache of each folder (cold cache).
4. Training speed: ProtoNet steps per second at 84x84x3 against 28x28x1, measured in one run.

    python benchmarks/own_data.py --data /work/shared/data/omniglot        # writes benchmarks/results/own_data.json
    python benchmarks/own_data.py --quick                                   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.data import ImageOptions, load_source
from fewbit.data.synthetic import write_image_folder
from fewbit.evaluation import evaluate
from fewbit.train import TrainConfig, load_run, meta_train

RESULTS = Path(__file__).resolve().parent / "results" / "own_data.json"
PROTONET = {"algorithm": "protonet", "backbone": "conv4", "ways": 5, "shots": 1, "queries": 5, "meta_batch": 4,
            "schedule": "cosine", "val_every": 100, "val_tasks": 50, "checkpoint_every": 0, "device": "cpu"}


def train_and_eval(spec: str, out: Path, steps: int, tasks: int, **settings: Any) -> dict[str, Any]:
    """Meta-train, then score the best checkpoint on `tasks` seeded test tasks."""
    config = TrainConfig.from_dict({**PROTONET, "dataset": spec, "steps": steps, **settings})
    start = time.perf_counter()
    meta_train(config, out, progress=False)
    seconds = time.perf_counter() - start
    run = load_run(out)
    test = load_source(spec, options=config.data, progress=False).split("test")
    result = evaluate(run.predictor(), test, ways=5, shots=1, queries=15, tasks=tasks)
    return {"accuracy": result.value, "ci95": result.ci95, "tasks": result.tasks, "steps": steps,
            "train_seconds": round(seconds, 1), "compress": settings.get("compress"),
            "per_task": list(result.per_task)}


def decode_rate(spec: str, options: ImageOptions, cache: Path) -> dict[str, Any]:
    """Images per second decoding `spec` into an empty cache."""
    os.environ["FEWBIT_CACHE"] = str(cache)
    start = time.perf_counter()
    source = load_source(spec, options=options)
    seconds = time.perf_counter() - start
    images = source.split("all").num_images
    return {"images": images, "seconds": round(seconds, 2), "images_per_second": round(images / seconds, 1)}


def step_rate(spec: str, image_size: int, steps: int, out: Path, **settings: Any) -> float:
    """Median seconds per ProtoNet training step (after one warm-up step)."""
    config = TrainConfig.from_dict({**PROTONET, "dataset": spec, "steps": steps, "val_every": 0,
                                    "image_size": image_size, "queries": 15, **settings})
    times: list[float] = []
    from fewbit.train import loop

    real = loop._Trainer._outer_step

    def timed(self: Any, step: int, snapshot: Any) -> Any:
        t0 = time.perf_counter()
        result = real(self, step, snapshot)
        times.append(time.perf_counter() - t0)
        return result

    loop._Trainer._outer_step = timed  # type: ignore[method-assign]
    try:
        meta_train(config, out, progress=False)
    finally:
        loop._Trainer._outer_step = real  # type: ignore[method-assign]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/omniglot", help="folder of the Omniglot zips")
    parser.add_argument("--steps", type=int, default=500, help="training steps of each accuracy run")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks that everything runs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    steps, tasks = (20, 20) if args.quick else (args.steps, args.tasks)
    torch.set_num_threads(2)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "torch": torch.__version__}, "steps": steps, "tasks": tasks}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # 1. the generated colour folder
        colour = write_image_folder(tmp / "colour", classes=60, images_per_class=20, size=48,
                                    formats=("png", "jpg"), seed=1)
        spec = f"folder:{colour}"
        report["colour_decode"] = decode_rate(spec, ImageOptions(image_size=32), tmp / "cache-1")
        report["colour"] = {}
        for name, compress in (("float32", None), ("w4a8", "quant:w4a8")):
            report["colour"][name] = train_and_eval(spec, tmp / f"colour-{name}", steps, tasks, image_size=32,
                                                    augment="auto", compress=compress)
            print("colour", name, {k: v for k, v in report["colour"][name].items() if k != "per_task"}, flush=True)
        # 2. Omniglot as a folder, and through its own reader
        small1 = Path(args.data) / "images_background_small1.zip"
        if small1.is_file():
            with zipfile.ZipFile(small1) as zf:
                zf.extractall(tmp / "omniglot")
            folder = tmp / "omniglot" / "images_background_small1"
            ink = {"invert": True, "normalize": False, "rotations": True}
            fspec = f"folder:{folder}"
            report["omniglot_decode"] = decode_rate(
                fspec, ImageOptions(invert=True, normalize=False), tmp / "cache-2")
            os.environ["FEWBIT_CACHE"] = str(tmp / "cache-3")
            report["omniglot_folder"] = {}
            for name, compress in (("float32", None), ("w4a8", "quant:w4a8")):
                report["omniglot_folder"][name] = train_and_eval(fspec, tmp / f"of-{name}", steps, tasks,
                                                                 compress=compress, **ink)
                print("omniglot folder", name, {k: v for k, v in report["omniglot_folder"][name].items()
                                                if k != "per_task"}, flush=True)
            reader = train_and_eval(f"omniglot:{small1}", tmp / "oz", steps, tasks, rotations=True)
            report["omniglot_reader_float32"] = reader
            same = reader["per_task"] == report["omniglot_folder"]["float32"]["per_task"]
            report["folder_equals_reader"] = same
            print("omniglot: reader", reader["accuracy"], "folder", report["omniglot_folder"]["float32"]["accuracy"],
                  "identical per task:", same, flush=True)
        # 4. training speed, side by side
        rates = {}
        big = write_image_folder(tmp / "big", classes=30, images_per_class=20, size=84, seed=2)
        for label, (dataset, size, extra) in {
            "84x84x3": (f"folder:{big}", 84, {}),
            "28x28x1": (f"folder:{big}", 28, {"channels": 1}),
        }.items():
            rates[label] = step_rate(dataset, size, 6 if args.quick else 21, tmp / f"speed-{label}", **extra)
        report["train_step_seconds"] = rates
        report["train_step_ratio_84x84x3_over_28x28x1"] = rates["84x84x3"] / rates["28x28x1"]
        print("seconds per step", rates, flush=True)
    for block in ("colour", "omniglot_folder"):
        for row in report.get(block, {}).values():
            row.pop("per_task", None)
    report.get("omniglot_reader_float32", {}).pop("per_task", None)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
