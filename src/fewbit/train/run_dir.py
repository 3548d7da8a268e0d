"""The run directory while a run trains: created or checked, locked, its metrics appended, its
checkpoints written and pruned, its old files moved aside for a restart. Never deletes what a run
holds except step checkpoints that verify and are older than the ones kept."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import warnings
from pathlib import Path
from typing import IO, Any

import torch

from fewbit._io import atomic_write_text, finite_or_none, open_append
from fewbit._lock import locked
from fewbit.errors import ConfigError, TrainingError
from fewbit.train import checkpoint as ck
from fewbit.train.config import TrainConfig
from fewbit.train.run import (
    CHECKPOINT_DIR,
    EVAL_NAME,
    METRICS_NAME,
    RESTARTED_PREFIX,
    check_run_files,
    is_run_dir,
    read_run_text,
    write_run_config,
)


class RunDirectory:
    """The files of one training run: config, metrics, checkpoints (only the main rank writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / CHECKPOINT_DIR

    def create(self, resume: bool) -> None:
        """Check what the directory is and create it for a new run (nothing is written into it yet)."""
        if resume:
            if not is_run_dir(self.path):
                raise ConfigError(f"--resume: {self.path} is not a run directory (it has no config.yaml)")
        else:
            if self.path.exists() and not self.path.is_dir():
                raise ConfigError(f"--out: {self.path} exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)

    def lock(self) -> contextlib.AbstractContextManager[Path]:
        """The directory's lock (InUseError for a second writer)."""
        return locked(self.path)

    def prepare(self, resume: bool, config: TrainConfig) -> None:
        """With the lock held: check the files a run keeps, refuse to start a new run over an old
        one, then write the config of a new run."""
        check_run_files(self.path)
        if not resume:
            if is_run_dir(self.path):
                raise ConfigError(
                    f"--out: {self.path} already holds a run; resume it with --resume {self.path} or pick another --out"
                )
            self.checkpoints.mkdir(exist_ok=True)
            self.write_config(config)

    def write_config(self, config: TrainConfig) -> None:
        """Write config.yaml (atomically)."""
        write_run_config(self.path, config)

    def metrics(self) -> MetricsLog:
        """The metrics file, opened to append one JSON line per record."""
        return MetricsLog(self.path / METRICS_NAME)

    def truncate_metrics(self, step: int) -> None:
        """Keep the metric lines up to `step` (a torn last line from a kill is dropped)."""
        path = self.path / METRICS_NAME
        if not os.path.lexists(path):
            return
        keep = []
        for line in read_run_text(path).splitlines():
            try:
                record = json.loads(line)
                if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                    keep.append(line)
            except (ValueError, TypeError, OverflowError):  # a torn or edited line is dropped
                continue
        atomic_write_text(path, "".join(f"{line}\n" for line in keep))

    def save_step(self, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int) -> Path:
        """Write the resumable checkpoint of `step`, then prune to the `keep` newest that verify."""
        path = ck.save_checkpoint(ck.step_path(self.checkpoints, step), tensors, state)
        ck.prune_checkpoints(self.checkpoints, keep, newest=path)
        return path

    def save_best(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write the best checkpoint (weights and state, no optimizer)."""
        ck.save_checkpoint(self.checkpoints / ck.BEST_NAME, tensors, state)

    def has_step(self, step: int) -> bool:
        """Whether the newest step checkpoint is that of `step`."""
        newest = ck.step_checkpoints(self.checkpoints)
        return bool(newest) and newest[0] == ck.step_path(self.checkpoints, step)

    def held_checkpoints(self) -> list[str]:
        """The names of the checkpoint files the run holds (readable or not)."""
        return sorted(p.name for p in self.checkpoints.glob("*.safetensors")) if self.checkpoints.is_dir() else []

    def start_over(self, reason: str) -> None:
        """Make room to train from step 0: what the run holds moves into `restarted-<time>/`."""
        out = self.path
        present = [name for name in (CHECKPOINT_DIR, METRICS_NAME, EVAL_NAME) if (out / name).exists()]
        if (out / METRICS_NAME).exists() and not (out / METRICS_NAME).stat().st_size and present == [METRICS_NAME]:
            present = []  # an empty metrics file holds nothing to keep
        if present:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            dest = out / f"{RESTARTED_PREFIX}{stamp}"
            n = 1
            while dest.exists():
                n += 1
                dest = out / f"{RESTARTED_PREFIX}{stamp}-{n}"
            dest.mkdir()
            for name in present:
                os.replace(out / name, dest / name)
            warnings.warn(f"{reason}: training {out} again from step 0; its {', '.join(present)} moved to {dest}",
                          stacklevel=5)
        self.checkpoints.mkdir(exist_ok=True)


class MetricsLog:
    """metrics.jsonl, open for appending: one JSON line per record, flushed as written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] = open_append(path)

    def append(self, record: dict[str, Any], step: int) -> None:
        """Append one line; a full disk stops training with a clear message."""
        try:
            self.file.write(json.dumps({k: finite_or_none(v) for k, v in record.items()}, allow_nan=False) + "\n")
            self.file.flush()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TrainingError(
                    f"step {step}: disk full while appending to {self.path}; the checkpoints already written "
                    "are intact; free space and resume with --resume"
                ) from None
            raise

    def close(self) -> None:
        self.file.close()
