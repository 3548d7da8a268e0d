"""A resume never destroys what a run holds; a run has one writer; hostile checkpoints cost nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fewbit.errors import DataError, FewbitFormatError, InUseError, NotResumableError
from fewbit.train import load_config, load_run, meta_train, resume_training
from fewbit.train import loop as loop_module
from fewbit.train.checkpoint import BEST_NAME, encode, load_checkpoint, step_checkpoints
from tests.bounded import one_line_error, run_bounded

SINE = {"dataset": "sinusoid", "algorithm": "maml", "shots": 5, "queries": 5, "meta_batch": 2, "inner_lr": 0.01,
        "steps": 4, "val_every": 2, "val_tasks": 3, "checkpoint_every": 2, "device": "cpu"}


def _trained(run: Path, **changes: object) -> Path:
    meta_train(load_config(None, **{**SINE, **changes}), run, progress=False)
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file the run holds, by path (the lock file, which names its last holder, aside)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != ".fewbit.lock"}


def _rewrite(path: Path, edit) -> None:
    """Re-encode a checkpoint with its state edited: the checksum is valid, the content hostile."""
    ckpt = load_checkpoint(path)
    state = {k: v for k, v in ckpt.state.items() if k not in ("format", "version")}
    tensors = dict(ckpt.tensors)
    edit(state, tensors)
    path.write_bytes(encode(tensors, state))


def test_no_resumable_checkpoint_changes_nothing_until_restart(tmp_path: Path) -> None:
    run = _trained(tmp_path / "run")
    for path in step_checkpoints(run / "checkpoints"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    before = _snapshot(run)
    assert (run / "checkpoints" / BEST_NAME).name in "".join(before)
    with pytest.raises(NotResumableError, match="nothing was changed.*--restart") as info:
        resume_training(run, steps=6, progress=False)
    assert "\n" not in str(info.value)
    assert _snapshot(run) == before  # best.safetensors, metrics.jsonl and config.yaml untouched
    with pytest.warns(UserWarning, match="moved to"):
        restarted = resume_training(run, steps=6, progress=False, restart=True)
    assert restarted.step == 6
    (kept,) = run.glob("restarted-*")
    assert _snapshot(kept) == {
        k: v for k, v in before.items() if k.startswith(("checkpoints/", "metrics.jsonl"))
    }
    assert len((run / "metrics.jsonl").read_text().splitlines()) > 0


def test_deleted_step_checkpoints_with_an_intact_best_are_refused(tmp_path: Path) -> None:
    run = _trained(tmp_path / "run")
    for path in step_checkpoints(run / "checkpoints"):
        path.unlink()
    best = (run / "checkpoints" / BEST_NAME).read_bytes()
    metrics = (run / "metrics.jsonl").read_text()
    with pytest.raises(NotResumableError, match="best.safetensors"):
        resume_training(run, progress=False)
    assert (run / "checkpoints" / BEST_NAME).read_bytes() == best
    assert (run / "metrics.jsonl").read_text() == metrics


def test_a_checkpoint_without_optimizer_state_is_skipped_or_refused(tmp_path: Path) -> None:
    run = _trained(tmp_path / "run")
    newest, older = step_checkpoints(run / "checkpoints")
    _rewrite(newest, lambda state, tensors: state.pop("optim_groups"))
    with pytest.warns(UserWarning, match="holds no optimizer state.*falling back"):
        assert resume_training(run, progress=False).step == 4  # from step 2, trained again to 4
    for path in step_checkpoints(run / "checkpoints"):
        _rewrite(path, lambda state, tensors: [tensors.pop(k) for k in list(tensors) if k.startswith("optim/")]
                 and state.pop("optim_groups"))
    with pytest.raises(NotResumableError, match="no optimizer state"):
        resume_training(run, progress=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda state, tensors: state.update(model_ways=200_000_000), "model_ways says 200000000"),
        (lambda state, tensors: state.update(model_ways="many"), "not a number of classes"),
        (lambda state, tensors: state.update(step="x"), "not a step number"),
        (lambda state, tensors: state.update(best=[1]), "best-score record"),
    ],
)
def test_hostile_checkpoint_states_are_one_line_errors(tmp_path: Path, edit, message: str) -> None:
    run = _trained(tmp_path / "run", steps=2)
    _rewrite(run / "checkpoints" / BEST_NAME, edit)
    with pytest.raises(FewbitFormatError, match=message):
        load_run(run)


@pytest.mark.slow
def test_model_ways_2e8_is_refused_under_a_memory_limit(tmp_path: Path) -> None:
    """Before the check, the checkpoint's claim built a 2e8-output head: a 51 GB allocation."""
    run = _trained(tmp_path / "run", steps=2)
    _rewrite(run / "checkpoints" / BEST_NAME, lambda state, tensors: state.update(model_ways=200_000_000))
    for command in (["eval", str(run), "--tasks", "2"], ["export", str(run), "--out", str(tmp_path / "m.fewbit")]):
        assert "model_ways says 200000000" in one_line_error(run_bounded(command, tmp_path, timeout=60))


HOLD = """
import sys, time
from fewbit._lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_trainer_of_the_same_run_is_refused_and_told_who(tmp_path: Path, capsys) -> None:
    from fewbit.cli import main

    run = _trained(tmp_path / "run", steps=2)
    before = _snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["train", "--resume", str(run), "--steps", "4"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"is in use by pid {holder.pid}" in err and "\n" not in err
        with pytest.raises(InUseError):
            meta_train(load_config(None, **SINE), run, progress=False)  # nor a new run over it
    finally:
        holder.kill()
        holder.wait()
    assert _snapshot(run) == before


def test_the_task_shape_is_checked_against_the_data_before_the_model_is_built(
    tiny_images: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the task shape was checked")

    monkeypatch.setattr(loop_module, "build_model", no_model)
    config = load_config(None, dataset=tiny_images, algorithm="protonet", backbone="mlp", ways=5000, shots=1,
                         queries=1, meta_batch=1, device="cpu")
    with pytest.raises(DataError, match="5000-way tasks need 5000 classes"):
        meta_train(config, tmp_path / "r", progress=False)


@pytest.mark.slow
def test_huge_ways_are_refused_under_a_memory_limit(tmp_path: Path) -> None:
    """`--ways 20000000` used to be refused only after 5.4 GB, `--ways 200000000` tried 51 GB."""
    for ways in ("20000000", "200000000"):
        result = run_bounded(["train", "--dataset", "glyphs", "--ways", ways, "--out", "r"], tmp_path, timeout=60)
        assert "a task may have" in one_line_error(result)
    result = run_bounded(["train", "--dataset", "glyphs", "--ways", "1e20", "--out", "r"], tmp_path, timeout=60)
    assert result.returncode == 2 and "expected an integer" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_val_metrics_are_json_without_nan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop_module.Trainer._validate

    def diverged(self, step):
        record = real(self, step)
        record["value"], record["ci95"] = float("nan"), float("inf")
        return record

    monkeypatch.setattr(loop_module.Trainer, "_validate", diverged)
    run = _trained(tmp_path / "run", steps=2)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"metrics.jsonl holds {c}"))
        if record["kind"] == "val":
            assert record["value"] is None and record["ci95"] is None


def test_a_run_killed_before_its_first_checkpoint_starts_over_keeping_its_metrics(tmp_path: Path) -> None:
    run = _trained(tmp_path / "run")
    metrics = (run / "metrics.jsonl").read_text()
    for path in (run / "checkpoints").iterdir():
        path.unlink()  # as if killed before anything was saved
    with pytest.warns(UserWarning, match="no checkpoint was written.*moved to"):
        assert resume_training(run, progress=False).step == 4
    (kept,) = run.glob("restarted-*")
    assert (kept / "metrics.jsonl").read_text() == metrics  # the old lines were truncated away before


def test_a_fifo_or_device_among_the_checkpoints_is_refused_not_read(tmp_path: Path) -> None:
    import os

    run = _trained(tmp_path / "run")
    newest = step_checkpoints(run / "checkpoints")[0]
    fifo = newest.with_name("step-00000099.safetensors")
    os.mkfifo(fifo)  # a plain read would block forever
    with pytest.warns(UserWarning, match="not a regular file.*falling back"):
        assert resume_training(run, steps=5, progress=False).step == 5
    (run / "checkpoints" / BEST_NAME).unlink()
    (run / "checkpoints" / BEST_NAME).symlink_to("/dev/zero")  # a read that never ends
    with pytest.warns(UserWarning, match="not a regular file"):
        assert load_run(run).step == 5  # falls back to the newest step checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("header", ["declared", "zeros"])
def test_a_4gb_sparse_best_checkpoint_is_checked_before_it_is_read(tmp_path: Path, header: str) -> None:
    """Issue 24: a 4 GB sparse best.safetensors was read whole (MemoryError under a 3 GB limit)."""
    import struct

    run = _trained(tmp_path / "run", steps=2)
    best = run / "checkpoints" / BEST_NAME
    raw = b""
    if header == "declared":  # the run's own header, plus one declared 4 GiB tensor
        from fewbit.train.checkpoint import checkpoint_header

        real = checkpoint_header(best)
        entries: dict = {"__metadata__": {"fewbit.state": json.dumps(real.state), "fewbit.sha256": "0" * 64}}
        offset = 0
        for name, shape in {**real.shapes, "model/huge": (1 << 30,)}.items():
            size = 4 * int(np.prod(shape))
            entries[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(entries).encode()
        raw = struct.pack("<Q", len(text)) + text
    best.unlink()
    with open(best, "wb") as f:
        f.write(raw)
        f.truncate(len(raw) + (4 << 30))
    done = run_bounded(["eval", str(run), "--tasks", "2", "--json"], tmp_path, memory=3 << 30, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "using the newest step checkpoint instead" in done.stderr and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["step"] == 2
