"""Compressed (w4a8) vs float32 training step time for Conv-4, measured side by side in one run.

Each cell trains through the public API (`meta_train`, then `resume_training` for every further
round), and the cells take turns in rounds of `--chunk` steps, so the machine's load (it is
shared) falls on float32 and w4a8 alike. Step times come from the `on_step` callback's clock
(the first step of each round is dropped as warm-up: it pays for loading the checkpoint).
Reports the median step time of each cell and the w4a8 / float32 ratio per algorithm.

    nice python benchmarks/compressed_step.py                 # -> benchmarks/results/compressed_step.json
    nice python benchmarks/compressed_step.py --rounds 2 --chunk 4 --algorithms protonet
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.train import TrainConfig, meta_train, resume_training

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "omniglot"
# The training set-ups of the Omniglot recipes (configs/), one step each.
ALGORITHMS: dict[str, dict[str, Any]] = {
    "protonet-5way": {"algorithm": "protonet", "ways": 5, "queries": 15, "meta_batch": 4},
    "protonet-20way": {"algorithm": "protonet", "ways": 20, "queries": 5, "meta_batch": 4},
    "maml": {"algorithm": "maml", "ways": 5, "queries": 15, "meta_batch": 4, "inner_steps": 1, "inner_lr": 0.4},
    "pretrain": {"algorithm": "simpleshot", "batch_size": 128},
}
SPECS = {"float32": None, "w4a8": "quant:w4a8"}


def cell_config(data: str, algorithm: dict[str, Any], compress: str | None, steps: int) -> TrainConfig:
    base = {"dataset": data, "backbone": "conv4", "shots": 1, "rotations": True, "augment": "glyph",
            "steps": steps, "val_every": 0, "checkpoint_every": 0, "keep_checkpoints": 1, "device": "cpu",
            "seed": 0, "compress": compress}
    return TrainConfig.from_dict({**base, **algorithm})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="omniglot-minimal folder (default ../shared/...; else glyphs)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=8, help="steps per cell per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "compressed_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.data) if args.data else DEFAULT_DATA
    data = f"omniglot-minimal:{folder}" if folder.is_dir() else "glyphs"

    work = Path(tempfile.mkdtemp(prefix="fewbit-step-"))
    times: dict[tuple[str, str], list[float]] = {(a, s): [] for a in args.algorithms for s in SPECS}
    try:
        for r in range(args.rounds):
            steps = args.chunk * (r + 1)
            for a in args.algorithms:
                for s, spec in SPECS.items():
                    stamps: list[float] = []
                    out = work / f"{a}-{s}"

                    def on_step(record: dict[str, Any], stamps: list[float] = stamps) -> None:
                        stamps.append(time.perf_counter())

                    t0 = time.perf_counter()
                    if r == 0:
                        meta_train(cell_config(data, ALGORITHMS[a], spec, steps), out, progress=False, on_step=on_step)
                    else:
                        resume_training(out, steps=steps, progress=False, on_step=on_step)
                    # steps 2.. of this round (the first pays for start-up and the checkpoint load)
                    times[(a, s)] += [b - a_ for a_, b in zip(stamps, stamps[1:])]
                    print(f"round {r + 1}/{args.rounds} {a:15s} {s:8s} {time.perf_counter() - t0:6.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows: dict[str, Any] = {}
    print(f"\n{'algorithm':15s} {'float32 s/step':>15s} {'w4a8 s/step':>12s} {'ratio':>7s}")
    for a in args.algorithms:
        f32 = statistics.median(times[(a, "float32")])
        q = statistics.median(times[(a, "w4a8")])
        rows[a] = {"setup": ALGORITHMS[a], "float32_s": f32, "w4a8_s": q, "ratio": q / f32,
                   "samples": len(times[(a, "w4a8")])}
        print(f"{a:15s} {f32:15.3f} {q:12.3f} {q / f32:6.2f}x")
    result = {
        "benchmark": "compressed_step",
        "data": data.split(":")[0],
        "workload": "Conv-4 28x28, 1-shot, rotations and glyph augmentation; w4a8 = quant:w4a8 (min-max per-channel "
                    "4-bit weights, 8-bit activations, on in in every forward) vs float32; median of interleaved steps",
        "rounds": args.rounds, "chunk": args.chunk, "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_at_end": list(__import__("os").getloadavg())},
        "results": rows,
    }
    atomic_write_json(args.out, result)
    print(json.dumps({a: round(v["ratio"], 3) for a, v in rows.items()}))


if __name__ == "__main__":
    main()
