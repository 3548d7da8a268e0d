"""Checkpoints: one safetensors file each, holding tensors plus a JSON state, with a checksum.

A checkpoint file is written atomically (temp file, fsync, rename). Its safetensors metadata
holds `fewbit.state` (JSON: step, config hash, optimizer hyper-parameters, best metric...) and
`fewbit.sha256`, the hash of the tensor data region and the state text, so a torn or
bit-flipped file is detected on load. No pickle is ever read or written.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fewbit._io import atomic_write_bytes, read_regular_file
from fewbit.errors import FewbitFormatError, TrainingError

FORMAT = "fewbit-checkpoint"
FORMAT_VERSION = 1
STEP_PATTERN = re.compile(r"^step-(\d{8})\.safetensors$")
BEST_NAME = "best.safetensors"
MAX_CHECKPOINT_BYTES = 8 << 30  # weights, Adam state and RNG of the largest model fewbit builds, with room
# A checkpoint's tensors are named `<group>/<name>`: the model's state dict, the algorithm's extras
# (Meta-SGD's rates), the optimizer's slots (`optim/<param index>/<slot>`) and the RNG states.
MODEL, EXTRAS, OPTIM, RNG = "model", "extras", "optim", "rng"


def key(group: str, name: str | int) -> str:
    """The name of tensor `name` of `group` in a checkpoint."""
    return f"{group}/{name}"


def grouped(group: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` renamed into `group` (the inverse of `Checkpoint.group`)."""
    return {key(group, k): v for k, v in tensors.items()}


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds: named tensors and a JSON-able state mapping."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path | None = None

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix/`, with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}


def step_path(directory: str | Path, step: int) -> Path:
    """Where the resumable checkpoint of `step` lives."""
    return Path(directory) / f"step-{step:08d}.safetensors"


def encode(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file (tensors are copied to contiguous CPU memory)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    state_text = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **state}, sort_keys=True)
    draft = st_save(flat, metadata={"fewbit.state": state_text})
    digest = _digest(_data_region(draft), state_text)
    return st_save(flat, metadata={"fewbit.state": state_text, "fewbit.sha256": digest})


def decode(data: bytes, where: str = "checkpoint") -> Checkpoint:
    """Parse and verify checkpoint bytes; a torn, corrupt or foreign file raises FewbitFormatError."""
    try:
        header = _header(data)
        meta = header.get("__metadata__") or {}
        state_text, digest = meta["fewbit.state"], meta["fewbit.sha256"]
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        raise FewbitFormatError(f"{where} is not a fewbit checkpoint, or its header is damaged") from None
    if _digest(_data_region(data), state_text) != digest:
        raise FewbitFormatError(f"{where} is corrupt (checksum mismatch): truncated or modified")
    try:
        tensors = st_load(data)
        state = json.loads(state_text)
    except Exception as exc:  # safetensors raises its own error types for malformed data
        raise FewbitFormatError(f"{where} cannot be read ({exc})") from None
    if state.get("format") != FORMAT or not isinstance(state.get("version"), int):
        raise FewbitFormatError(f"{where} is not a fewbit checkpoint")
    if state["version"] > FORMAT_VERSION:
        raise FewbitFormatError(f"{where} has checkpoint version {state['version']}, newer than this fewbit reads")
    return Checkpoint(tensors, state)


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically; when the disk is full the previous files stay intact and we say so."""
    path = Path(path)
    data = encode(tensors, state)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(
                f"disk full while writing {path} ({len(data)} bytes); the previous checkpoints in "
                f"{path.parent} are intact; free space and resume with --resume"
            ) from None
        raise
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint file."""
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileNotFoundError:
        raise FewbitFormatError(f"checkpoint {path} does not exist") from None
    except ValueError as exc:  # a FIFO, a device, or a file larger than any checkpoint
        raise FewbitFormatError(str(exc)) from None
    ckpt = decode(data, str(path))
    return dataclasses.replace(ckpt, path=path)


def step_checkpoints(directory: str | Path) -> list[Path]:
    """The resumable checkpoints in `directory`, newest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; each bad newer one is skipped with a warning."""
    for path in step_checkpoints(directory):
        try:
            return load_checkpoint(path)
        except FewbitFormatError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint", stacklevel=2)
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest resumable checkpoints."""
    for path in step_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)


def _header(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("header runs past the end of the file")
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a mapping")
    return header


def _data_region(data: bytes) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    return data[8 + length :]


def _digest(region: bytes, state_text: str) -> str:
    h = hashlib.sha256()
    h.update(state_text.encode("utf-8"))
    h.update(region)
    return h.hexdigest()
