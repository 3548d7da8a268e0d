"""Distributed meta-training: tasks split across gloo ranks, meta-gradients all-reduced, rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fewbit.data.task import Task
from fewbit.train import load_config, load_run, meta_train
from fewbit.train.checkpoint import load_checkpoint, step_path
from fewbit.train.distributed import World, shard_bounds, shard_task

SETTINGS = {"algorithm": "maml", "backbone": "mlp", "ways": 3, "shots": 1, "queries": 2, "meta_batch": 5,
            "steps": 4, "val_every": 2, "val_tasks": 3, "checkpoint_every": 2, "inner_lr": 0.1, "device": "cpu"}


def test_shards_cover_the_meta_batch_once():
    for total in (1, 4, 5, 32):
        for size in (1, 2, 3):
            if size > total:
                continue
            bounds = [shard_bounds(total, World(rank, size)) for rank in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    task = Task(torch.arange(5).view(5, 1), torch.zeros(5, 1), torch.zeros(5, 1), torch.zeros(5, 1), 1)
    assert shard_task(task, World(1, 2)).support_x.flatten().tolist() == [3, 4]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tiny_images, tmp_path):
    one = meta_train(load_config(None, dataset=tiny_images, **SETTINGS), tmp_path / "one", progress=False)
    flags = ["--dataset", tiny_images, "--out", str(tmp_path / "two"), "--quiet"]
    for key, value in SETTINGS.items():
        flags += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fewbit",
           "train", *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    two = load_run(tmp_path / "two", checkpoint="last")
    for name, value in one.model.state_dict().items():
        # sums in another order; Adam's normalisation magnifies last-bit differences of tiny gradients
        torch.testing.assert_close(two.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    # only rank 0 wrote: the same files as one process, and every metric line once
    listing = sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*"))
    assert listing == sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*"))
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
    assert load_checkpoint(step_path(tmp_path / "two" / "checkpoints", 4)).state["world_size"] == 2
