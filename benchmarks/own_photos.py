"""Own photos: the README's own-images commands on a generated photo-like folder, old recipe against
the defaults, side by side.

The folder (`fewbit.data.synthetic.write_photo_folder`): 35 classes of 15 images, each class an
object of one texture, shape and palette (7 x 6 x 8 possible) at a random place, scale and turn
among clutter, in images of 50-200 pixels a side (rarely square), saved as JPEG, PNG and WebP.
Classes split 60/20/20 (21 train, 7 validation, 7 test). Each row runs `fewbit train` as a
newcomer would (the command is in the JSON), then `fewbit eval RUN --tasks 600 --queries 5`:
5-way 1-shot accuracy +- 95% CI on the 7 held-out classes, with the training wall time.

Rows:
- `readme-before`: the README's command before issue 26 (centre crop, 300 steps).
- `defaults`: `fewbit train --dataset folder:PATH --image-size 32 --algorithm protonet
  --compress quant:w4a8 --out RUN` and nothing else (photo augmentation, 4 tasks of 5 queries a
  step, steps chosen by validation with patience, at most 2,000).
- `readme`: the README's recipe, the same with `--algorithm simpleshot`: a classifier over all
  training classes (64 images a step), nearest class mean of centred, unit-length embeddings at test
  time; the same defaults otherwise.

Trainings use every core unless `--threads N` (the machine's default, what a user gets).

    python benchmarks/own_photos.py                 # -> benchmarks/results/own_photos.json
    python benchmarks/own_photos.py --quick         # a smoke run (tiny budgets; not a measurement)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.data.synthetic import write_photo_folder

RESULTS = Path(__file__).resolve().parent / "results" / "own_photos.json"
BASE = "fewbit train --dataset folder:{data} --image-size 32 --algorithm protonet --compress quant:w4a8 --out {run}"
ROWS = {
    "readme": BASE.replace("protonet", "simpleshot"),
    "defaults": BASE,
    "readme-before": BASE + " --ways 5 --shots 1 --queries 5 --meta-batch 2 --steps 300 --augment auto --resize crop",
}


def fewbit(command: str, env: dict[str, str]) -> tuple[dict[str, Any], str, float]:
    """Run a `fewbit ...` command line in a fresh process (`--json` added); its JSON, stderr, seconds."""
    argv = [sys.executable, "-m", "fewbit", *shlex.split(command)[1:], "--json"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout), done.stderr, seconds


def run_row(name: str, command: str, data: Path, work: Path, tasks: int, env: dict[str, str],
            quick: bool) -> dict[str, Any]:
    run = work / name
    train_command = command.format(data=data, run=run)
    if quick:
        train_command += " --steps 4 --val-every 2 --val-tasks 5"
    trained, _, seconds = fewbit(train_command, env)
    scored, _, _ = fewbit(f"fewbit eval {run} --tasks {tasks} --ways 5 --shots 1 --queries 5 --quiet", env)
    return {
        "command": command.format(data="PATH", run="RUN"),
        "accuracy": scored["accuracy"], "ci95": scored["ci95"], "tasks": scored["tasks"],
        "train_seconds": round(seconds, 1), "steps": trained["steps"], "max_steps": trained.get("max_steps"),
        "best": trained["best"], "stopped": trained.get("stopped"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, of {', '.join(ROWS)}")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of each training and evaluation (default: every core)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks that everything runs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    tasks = 20 if args.quick else args.tasks
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
        "data": "write_photo_folder(classes=35, images_per_class=15, sizes=(50, 200), seed=0)",
        "tasks": tasks, "rows": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_photo_folder(tmp / "photos", classes=35, images_per_class=15, seed=0)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "FEWBIT_CACHE": str(tmp / "cache")}
        # the README's first command reads (and caches) the folder, so no row's training time holds the decoding
        _, _, seconds = fewbit(f"fewbit data info folder:{data} --image-size 32", env)
        report["data_info_seconds"] = round(seconds, 1)
        for name in rows:
            row = run_row(name, ROWS[name], data, tmp, tasks, env, args.quick)
            report["rows"][name] = row
            print(f"{name:14s} {100 * row['accuracy']:6.2f} +- {100 * row['ci95']:.2f} %  "
                  f"{row['steps']:5d} steps  {row['train_seconds']:7.1f} s  {row['stopped'] or ''}", flush=True)
    done = report["rows"]
    for name in ("defaults", "readme"):
        if "readme-before" in done and name in done:
            before, after = done["readme-before"], done[name]
            report[f"{name}_minus_before_points"] = round(100 * (after["accuracy"] - before["accuracy"]), 2)
            report[f"{name}_over_before_time"] = round(after["train_seconds"] / before["train_seconds"], 2)
            print(f"{name} - before: {report[f'{name}_minus_before_points']:+.2f} points, "
                  f"{report[f'{name}_over_before_time']:.2f}x the training time")
    if not args.quick:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
