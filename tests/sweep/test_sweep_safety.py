"""A sweep never deletes a trained run, has one writer per folder, and splits the cores among its workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewbit.cli import main
from fewbit.errors import InUseError
from fewbit.sweep import cell as cell_module
from fewbit.sweep import runner
from fewbit.sweep.grid import SweepConfig
from fewbit.train import load_config, meta_train
from fewbit.train.checkpoint import BEST_NAME, step_checkpoints

SINE = {"dataset": "sinusoid", "algorithm": "maml", "shots": 5, "queries": 5, "meta_batch": 2, "inner_lr": 0.01,
        "steps": 2, "val_every": 2, "val_tasks": 3, "checkpoint_every": 2, "device": "cpu"}
HOLD = """
import sys, time
from fewbit._lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _run(tmp_path: Path, **changes: object) -> tuple[object, Path]:
    config = load_config(None, **{**SINE, **changes})
    run = tmp_path / "cells" / "c" / "run"
    meta_train(config, run, progress=False)
    return config, run


def test_a_cell_run_that_cannot_be_resumed_is_restarted_keeping_its_files(tmp_path: Path) -> None:
    config, run = _run(tmp_path)
    for path in step_checkpoints(run / "checkpoints"):
        path.write_bytes(b"torn")
    best = (run / "checkpoints" / BEST_NAME).read_bytes()
    with pytest.warns(UserWarning, match="moved to"):
        assert cell_module._resumed(config.replace(steps=3), run, progress=False)
    (kept,) = run.glob("restarted-*")
    assert (kept / "checkpoints" / BEST_NAME).read_bytes() == best  # was rmtree'd before


def test_a_cell_run_with_other_settings_moves_aside(tmp_path: Path) -> None:
    config, run = _run(tmp_path)
    best = (run / "checkpoints" / BEST_NAME).read_bytes()
    with pytest.warns(UserWarning, match="cannot continue its run.*moved to"):
        assert not cell_module._resumed(config.replace(inner_lr=0.02), run, progress=False)
    (stale,) = run.parent.glob("run.stale-*")
    assert (stale / "checkpoints" / BEST_NAME).read_bytes() == best and not run.exists()


def _hold(directory: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_cell_run_another_process_trains_is_left_alone(tmp_path: Path) -> None:
    config, run = _run(tmp_path)
    holder = _hold(run)
    try:
        with pytest.raises(InUseError):
            cell_module._resumed(config, run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (run / "checkpoints" / BEST_NAME).exists() and not list(run.parent.glob("run.stale-*"))


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    holder = _hold(out)
    try:
        assert main(["sweep", "--dataset", "sinusoid", "--algorithms", "maml", "--bits", "32", "--sparsity", "0",
                     "--modes", "aware", "--steps", "1", "--out", str(out)]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert f"sweep {out} is in use by pid {holder.pid}" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == [".fewbit.lock"]  # nothing written


def test_cells_run_with_the_threads_given_per_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_cell(sweep, cell, root, progress=False):
        seen.append(torch.get_num_threads())
        return {"cell": cell.cell_id, "accuracy": 0.5}

    monkeypatch.setattr(runner, "run_cell", fake_cell)
    monkeypatch.setattr(runner, "write_outputs", lambda rows, root: {})
    sweep = SweepConfig(base={"dataset": "sinusoid"}, bits=(32,), sparsity=(0.0,), algorithms=("maml",),
                        modes=("aware",))
    before = torch.get_num_threads()
    runner.run_sweep(sweep, tmp_path / "s", progress=False, threads=1)
    assert seen == [1] and torch.get_num_threads() == before
