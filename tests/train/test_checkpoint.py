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
    ck.prune_checkpoints(tmp_path, keep=2, newest=ck.step_path(tmp_path, 3))
    assert [p.name for p in ck.step_checkpoints(tmp_path)] == ["step-00000003.safetensors", "step-00000002.safetensors"]


@pytest.mark.parametrize("junk", ["garbage", "fifo", "torn", "empty", "directory", "dangling-link"])
def test_prune_never_counts_or_deletes_what_does_not_verify(tmp_path, junk):
    """Issue 24: two unreadable higher-numbered files used to push out every good checkpoint."""
    import os

    for step in (10, 20):
        ck.save_checkpoint(ck.step_path(tmp_path, step), _tensors(step), {"step": step})
    good = ck.step_path(tmp_path, 20).read_bytes()
    for step in (98, 99):
        path = ck.step_path(tmp_path, step)
        if junk == "garbage":
            path.write_bytes(os.urandom(500))
        elif junk == "fifo":
            os.mkfifo(path)
        elif junk == "torn":
            path.write_bytes(good[:-64])
        elif junk == "empty":
            path.write_bytes(b"")
        elif junk == "directory":
            path.mkdir()
        else:
            path.symlink_to(tmp_path / "nowhere")
    newest = ck.save_checkpoint(ck.step_path(tmp_path, 30), _tensors(30), {"step": 30})
    deleted = ck.prune_checkpoints(tmp_path, keep=2, newest=newest)
    assert [p.name for p in deleted] == ["step-00000010.safetensors"]
    names = [p.name for p in ck.step_checkpoints(tmp_path)]
    assert names == [f"step-000000{s}.safetensors" for s in (99, 98, 30, 20)]  # junk left for the user
    assert ck.load_checkpoint(newest).state["step"] == 30


def test_a_huge_declared_checkpoint_is_refused_before_its_data_is_read(tmp_path, monkeypatch):
    """Issue 24: a 4 GB (sparse) checkpoint was read whole before any check."""
    import json
    import struct

    header = {"model/w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]},
              "__metadata__": {"fewbit.state": json.dumps({"format": "fewbit-checkpoint", "version": 1}),
                               "fewbit.sha256": "0" * 64}}
    raw = json.dumps(header).encode()
    path = tmp_path / "best.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + (4 << 30))  # sparse: 4 GiB of zeros that take no disk
    reads = []
    monkeypatch.setattr(ck, "read_regular_file", lambda *a, **k: reads.append(a) or b"")
    assert ck.checkpoint_header(path).shapes == {"model/w": (1 << 30,)}
    with pytest.raises(FewbitFormatError, match="declares 1,073,741,824 tensor elements, more than"):
        ck.load_checkpoint(path, max_elements=1_000_000)
    assert reads == []
    for bad in (b"\xff" * 8, struct.pack("<Q", 10**12), b"\x00" * 3):
        path.write_bytes(bad + raw)
        with pytest.raises(FewbitFormatError, match="header is damaged"):
            ck.checkpoint_header(path)


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
