"""Junk in every file a run holds: links (to a file outside the run, or dangling), FIFOs, garbage,
empty files and folders in place of each. Resuming, evaluating and exporting the run either work
or stop with one line; nothing outside the run is written or created, nothing blocks, and no
good checkpoint is deleted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fewbit.errors import FewbitError
from fewbit.train import load_config, load_run, meta_train, resume_training
from fewbit.train.checkpoint import verifies

SINE = {"dataset": "sinusoid", "algorithm": "maml", "shots": 5, "queries": 5, "meta_batch": 2, "inner_lr": 0.01,
        "steps": 4, "val_every": 2, "val_tasks": 3, "checkpoint_every": 2, "device": "cpu"}
ENTRIES = ("config.yaml", "metrics.jsonl", "eval.json", ".fewbit.lock", "checkpoints", "checkpoints/best.safetensors",
           "checkpoints/step-00000004.safetensors", "checkpoints/step-00000002.safetensors",
           "checkpoints/step-00000099.safetensors", "checkpoints/step-00000098+99.safetensors")
KINDS = ("link", "dangling", "fifo", "garbage", "empty", "folder")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    meta_train(load_config(None, **SINE), run, progress=False)
    (run / "eval.json").write_text("{}\n")
    return run


class Blocked(Exception):
    """A call that did not return in time (not an OSError: it must not pass for a refusal)."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of blocking (a FIFO opened for reading without O_NONBLOCK waits for ever)."""

    def expire(signum: int, frame: object) -> None:
        raise Blocked(f"still running after {seconds} s: something blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _plant(path: Path, kind: str, victim: Path, nowhere: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    if kind == "link":
        path.symlink_to(victim)
    elif kind == "dangling":
        path.symlink_to(nowhere)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "garbage":
        path.write_bytes(os.urandom(300))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()


def _outside(root: Path, run: Path) -> dict[str, bytes]:
    """Every file under `root` outside `run`, by path, with its bytes."""
    return {str(p): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and run not in p.parents}


def _attempt(action: object) -> FewbitError | OSError | None:
    try:
        with deadline(60):
            action()  # type: ignore[operator]
    except (FewbitError, OSError) as exc:
        assert "\n" not in str(exc), str(exc)
        return exc
    return None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_junk_in_a_run_loses_nothing_and_writes_nothing_outside(trained: Path, tmp_path: Path, entry: str,
                                                                kind: str) -> None:
    if entry == "checkpoints" and kind in ("garbage", "empty"):
        kind = "garbage"  # a file where the folder should be
    run = tmp_path / "box" / "run"
    shutil.copytree(trained, run, symlinks=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("not fewbit's\n")
    nowhere = tmp_path / "nowhere"
    good = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("step-*.safetensors")}
    if "+" in entry:  # two junk files numbered above every good checkpoint
        for step in ("98", "99"):
            _plant(run / f"checkpoints/step-000000{step}.safetensors", kind, victim, nowhere)
    else:
        _plant(run / entry, kind, victim, nowhere)
    before = _outside(tmp_path, run)

    resumed = _attempt(lambda: resume_training(run, steps=6, progress=False))
    evaluated = _attempt(lambda: load_run(run))

    assert victim.read_text() == "not fewbit's\n"
    assert not os.path.lexists(nowhere), "a dangling link made fewbit create a file outside the run"
    assert _outside(tmp_path, run) == before
    kept = [p for p in (run / "checkpoints").glob("step-*.safetensors") if p.is_file() and verifies(p)] if (
        run / "checkpoints").is_dir() and not (run / "checkpoints").is_symlink() else []
    if resumed is None:  # trained on: its newest checkpoint is step 6, and it verifies
        assert any(p.name == "step-00000006.safetensors" for p in kept), sorted(p.name for p in kept)
    elif entry != "checkpoints":  # refused: every good step checkpoint left is byte for byte what it was
        for name, data in good.items():
            if f"checkpoints/{name}" != entry:
                assert (run / "checkpoints" / name).read_bytes() == data, name
    if evaluated is not None:
        assert isinstance(evaluated, (FewbitError, OSError))
