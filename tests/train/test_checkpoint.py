"""Checkpoint files: round trip, checksum, torn and bit-flipped files, fallback, disk full."""

from __future__ import annotations

import errno

import pytest
import torch

from fewbit.errors import FewbitFormatError, TrainingError
from fewbit.train import checkpoint as ck


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"model/w": torch.randn(4, 3, generator=g), "optim/0/step": torch.tensor(3.0),
            "rng/torch": torch.get_rng_state()}


def test_round_trip_is_exact(tmp_path):
    tensors = _tensors(0)
    ck.save_checkpoint(tmp_path / "a.safetensors", tensors, {"step": 3, "best": None})
    back = ck.load_checkpoint(tmp_path / "a.safetensors")
    assert back.state["step"] == 3 and back.state["format"] == ck.FORMAT
    for k, v in tensors.items():
        assert torch.equal(back.tensors[k], v) and back.tensors[k].dtype == v.dtype
    assert set(back.group("model")) == {"w"}


@pytest.mark.parametrize("damage", ["truncate", "flip_data", "flip_header", "empty"])
def test_damage_is_detected(tmp_path, damage):
    path = ck.save_checkpoint(tmp_path / "a.safetensors", _tensors(0), {"step": 1})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 17]
    elif damage == "flip_data":
        data[-5] ^= 0xFF
    elif damage == "flip_header":
        data[20] ^= 0x55
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(FewbitFormatError, match="a.safetensors"):
        ck.load_checkpoint(path)


def test_latest_falls_back_to_previous_with_a_warning(tmp_path):
    for step in (5, 10):
        ck.save_checkpoint(ck.step_path(tmp_path, step), _tensors(step), {"step": step})
    newest = ck.step_path(tmp_path, 10)
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="falling back"):
        found = ck.latest_checkpoint(tmp_path)
    assert found is not None and found.state["step"] == 5


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3):
        ck.save_checkpoint(ck.step_path(tmp_path, step), _tensors(step), {"step": step})
    ck.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ck.step_checkpoints(tmp_path)] == ["step-00000003.safetensors", "step-00000002.safetensors"]


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = ck.save_checkpoint(tmp_path / "best.safetensors", _tensors(0), {"step": 1})
    before = path.read_bytes()
    real_fsync = ck.atomic_write_bytes.__globals__["atomic_open"]

    import contextlib

    @contextlib.contextmanager
    def full_disk(p, mode="wb"):
        with real_fsync(p, mode) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
            yield f  # pragma: no cover

    monkeypatch.setitem(ck.atomic_write_bytes.__globals__, "atomic_open", full_disk)
    with pytest.raises(TrainingError, match="disk full.*intact"):
        ck.save_checkpoint(path, _tensors(1), {"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temp file left behind
