"""A content-keyed cache of decoded arrays under `$XDG_CACHE_HOME/fewbit` (writes are atomic)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fewbit._io import atomic_write_bytes


def cache_dir() -> Path:
    """`$FEWBIT_CACHE`, else `$XDG_CACHE_HOME/fewbit`, else `~/.cache/fewbit`."""
    if os.environ.get("FEWBIT_CACHE"):
        return Path(os.environ["FEWBIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fewbit"


def cached_arrays(key: str, build: Callable[[], dict[str, np.ndarray]], enabled: bool = True) -> dict[str, np.ndarray]:
    """The arrays stored under `key`, built by `build()` and saved (npz, no pickle) on a miss."""
    if not enabled:
        return build()
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:  # a damaged cache file is rebuilt, never trusted
            warnings.warn(f"fewbit cache file {path} is unreadable ({exc}); rebuilding it", stacklevel=2)
    arrays = build()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:  # a read-only home must not stop the user
        warnings.warn(f"could not write fewbit cache {path}: {exc}", stacklevel=2)
    return arrays
