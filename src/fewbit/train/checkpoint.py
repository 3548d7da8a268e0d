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
import math
import os
import re
import stat
import struct
import warnings
from collections.abc import Callable
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
MAX_HEADER_BYTES = 100 << 20  # safetensors' own bound on its JSON header
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
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
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # every tensor's, even unread

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
    return Checkpoint(tensors, state, shapes={k: tuple(v.shape) for k, v in tensors.items()})


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


def checkpoint_header(path: str | Path) -> Checkpoint:
    """The state and tensor shapes of a checkpoint file, read from its header alone: no tensor data
    is read (`tensors` is empty), so a file of any size costs at most its header. The tensor
    entries are checked to lie in the file; the checksum is checked by `load_checkpoint`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FewbitFormatError(f"checkpoint {path} does not exist") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FewbitFormatError(f"checkpoint {path} is not a regular file")
        if info.st_size > MAX_CHECKPOINT_BYTES:
            raise FewbitFormatError(f"checkpoint {path} is {info.st_size} bytes, more than the "
                                    f"{MAX_CHECKPOINT_BYTES} a checkpoint may have")
        head = os.pread(fd, 8, 0)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, info.st_size - 8):
            raise FewbitFormatError(f"{path} is not a fewbit checkpoint, or its header is damaged")
        raw = os.pread(fd, length, 8)
    finally:
        os.close(fd)
    try:
        header = json.loads(raw.decode("utf-8"))
        state = json.loads(header["__metadata__"]["fewbit.state"])
        region = info.st_size - 8 - length
        shapes = {name: _entry_shape(entry, region) for name, entry in header.items() if name != "__metadata__"}
        if not isinstance(state, dict):
            raise ValueError("state is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise FewbitFormatError(f"{path} is not a fewbit checkpoint, or its header is damaged") from None
    return Checkpoint({}, state, path, shapes)


def _entry_shape(entry: Any, region: int) -> tuple[int, ...]:
    """A header entry's shape, checked: a known dtype, and data offsets that fit its shape and the file."""
    shape, (start, stop) = entry["shape"], entry["data_offsets"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, start, stop)):
        raise ValueError("bad shape or offsets")
    if stop - start != math.prod(shape) * _DTYPE_BYTES[entry["dtype"]] or stop > region:
        raise ValueError("offsets do not fit")
    return tuple(shape)


def load_checkpoint(path: str | Path, *, max_elements: int | None = None) -> Checkpoint:
    """Read and verify one checkpoint file. With `max_elements` (the most tensor elements the run's
    model, optimizer state and RNG can hold), a header that declares more is refused before any of
    the file's data is read."""
    path = Path(path)
    header = checkpoint_header(path)
    declared = sum(math.prod(shape) for shape in header.shapes.values())
    if max_elements is not None and declared > max_elements:
        raise FewbitFormatError(
            f"{path} declares {declared:,} tensor elements, more than a checkpoint of this run's model holds "
            f"({max_elements:,}); it belongs to another run or is damaged"
        )
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except FileNotFoundError:
        raise FewbitFormatError(f"checkpoint {path} does not exist") from None
    except ValueError as exc:  # a FIFO, a device, or a file larger than any checkpoint
        raise FewbitFormatError(str(exc)) from None
    return dataclasses.replace(decode(data, str(path)), path=path)


def verifies(path: str | Path) -> bool:
    """Whether `path` is a checkpoint that reads and verifies (checksum included)."""
    try:
        load_checkpoint(path)
    except FewbitFormatError:
        return False
    return True


def step_checkpoints(directory: str | Path) -> list[Path]:
    """The resumable checkpoints in `directory`, newest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | Path, *, bound: Callable[[Checkpoint], int] | None = None) -> Checkpoint | None:
    """The newest checkpoint that verifies; each bad newer one is skipped with a warning. `bound`
    gives, from a checkpoint's header, the most tensor elements it may declare (see load_checkpoint)."""
    for path in step_checkpoints(directory):
        try:
            return load_checkpoint(path, max_elements=bound(checkpoint_header(path)) if bound else None)
        except FewbitFormatError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint", stacklevel=2)
    return None


def prune_checkpoints(directory: str | Path, keep: int, *, newest: Path) -> list[Path]:
    """Delete all but the `keep` newest step checkpoints that verify; returns what was deleted.

    `newest` (the one just written) is always kept and counted. A file that does not verify (junk, a FIFO, a
    torn copy, a checkpoint of a higher step that cannot be read) is neither counted nor deleted:
    it can never push a good checkpoint out.
    """
    newest = Path(newest)
    kept, deleted = 1, []
    for path in step_checkpoints(directory):
        if path == newest or not verifies(path):
            continue
        if kept < keep:
            kept += 1
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


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
