"""Distributed meta-training throughput: meta-steps per second with 1 and 2 torchrun processes (gloo, CPU)
on this machine, and the all-reduce volume per step.

Every rank draws the same global meta-batch and trains on its share of the tasks; the meta-gradients
(plus loss and accuracy) are summed in one flat all-reduce per step. The same global meta-batch is
used at every world size, so the runs compute the same thing and only the speed differs.

    nice python benchmarks/distributed.py                     # writes benchmarks/results/distributed.json
    nice python benchmarks/distributed.py --steps 10 --algorithm protonet
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fewbit._io import atomic_write_json
from fewbit.train.run import train_times

WARMUP_STEPS = 2


def settings(args: argparse.Namespace) -> list[str]:
    """The `fewbit train` flags shared by every configuration."""
    return [
        "--dataset",
        args.dataset,
        "--algorithm",
        args.algorithm,
        "--backbone",
        "conv4",
        "--ways",
        "5",
        "--shots",
        "1",
        "--queries",
        "15",
        "--meta-batch",
        str(args.meta_batch),
        "--steps",
        str(args.steps),
        "--inner-steps",
        "1",
        "--inner-lr",
        "0.4",
        "--val-every",
        "0",
        "--checkpoint-every",
        "0",
        "--device",
        "cpu",
        "--quiet",
    ]


def measure(args: argparse.Namespace, procs: int, threads: int) -> dict[str, Any]:
    """Launch one training with `procs` processes of `threads` threads; steps/s from its metrics."""
    run_dir = Path(args.workdir) / f"p{procs}t{threads}"
    shutil.rmtree(run_dir, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(procs),
        "-m",
        "fewbit",
        "train",
        *settings(args),
        "--out",
        str(run_dir),
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{done.stderr[-3000:]}")
    times = [t for _, t in sorted(train_times(run_dir).items())]
    timed = len(times) - WARMUP_STEPS
    seconds = times[-1] - times[WARMUP_STEPS - 1]
    return {
        "processes": procs,
        "threads_per_process": threads,
        "steps_timed": timed,
        "seconds_per_step": round(seconds / timed, 3),
        "steps_per_second": round(timed / seconds, 4),
        "wall_seconds": round(wall, 1),
    }


def comm_volume(args: argparse.Namespace) -> dict[str, Any]:
    """Bytes in the per-step all-reduce buffer, and what a ring all-reduce moves per rank."""
    from fewbit.models import build_backbone

    model = build_backbone("conv4", ways=5)
    numel = sum(p.numel() for p in model.parameters()) + 2  # + loss and accuracy
    buffer = 4 * numel
    return {
        "parameters": numel - 2,
        "allreduce_buffer_bytes": buffer,
        "ring_bytes_sent_per_rank_2proc": int(2 * (2 - 1) / 2 * buffer),
        "allreduces_per_step": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="omniglot-minimal:/work/shared/data/omniglot")
    parser.add_argument("--algorithm", default="fomaml")
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workdir", default="/tmp/fewbit-bench/distributed")
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()
    rows = [measure(args, 1, 1), measure(args, 1, 2), measure(args, 2, 1)]
    base = rows[0]["steps_per_second"]
    for row in rows:
        row["speedup_vs_1x1"] = round(row["steps_per_second"] / base, 3)
    report = {
        "benchmark": "distributed",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "algorithm": args.algorithm,
        "meta_batch": args.meta_batch,
        "backend": "gloo",
        "communication": comm_volume(args),
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(
        f"{args.algorithm}, Conv-4 5-way 1-shot, global meta-batch {args.meta_batch}, {os.cpu_count()} CPUs"
    )
    print(f"{'procs':>5} {'threads':>7} {'s/step':>8} {'steps/s':>8} {'speedup':>8}")
    for r in rows:
        print(
            f"{r['processes']:>5} {r['threads_per_process']:>7} {r['seconds_per_step']:>8} "
            f"{r['steps_per_second']:>8} {r['speedup_vs_1x1']:>8}"
        )
    c = report["communication"]
    print(
        f"all-reduce per step: {c['allreduce_buffer_bytes'] / 1e3:.1f} kB buffer "
        f"({c['parameters']} parameters + 2 scalars), one collective"
    )


if __name__ == "__main__":
    main()
