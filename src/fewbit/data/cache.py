"""A content-keyed cache of decoded arrays under `$XDG_CACHE_HOME/fewbit`, read back as memory maps.

An entry is a folder `<cache>/<key>/` holding one `.npy` file per large array (pixels: opened
with `mmap_mode="r"`, so a data set of gigabytes trains without a copy in RAM) and `index.npz`
with the small ones (labels, names, statistics). It is built in a temporary folder beside it and
renamed into place in one step, so a reader sees a whole entry or none. An entry that does not
read back whole (a torn file, a foreign file, a truncated array) is set aside and rebuilt,
never trusted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

INDEX_NAME = "index.npz"
# What a damaged entry raises on reading: a missing or truncated file, a bad .npy header or npz.
_BROKEN = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def cache_dir() -> Path:
    """`$FEWBIT_CACHE`, else `$XDG_CACHE_HOME/fewbit`, else `~/.cache/fewbit`."""
    if os.environ.get("FEWBIT_CACHE"):
        return Path(os.environ["FEWBIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fewbit"


def read_entry(key: str, large: Iterable[str], small: Iterable[str]) -> dict[str, np.ndarray] | None:
    """The arrays of entry `key` (large ones memory-mapped read-only), or None when absent or broken."""
    entry = cache_dir() / key
    if not entry.is_dir():
        return None
    try:
        out: dict[str, np.ndarray] = {}
        for name in large:
            out[name] = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        with np.load(entry / INDEX_NAME, allow_pickle=False) as index:
            for name in small:
                out[name] = index[name]
        return out
    except _BROKEN as exc:
        warnings.warn(f"fewbit cache entry {entry} is unreadable ({_one_line(exc)}); rebuilding it", stacklevel=3)
        discard_entry(key)
        return None


def discard_entry(key: str) -> None:
    """Remove entry `key` (renamed aside first, so a concurrent reader never sees half of it)."""
    entry = cache_dir() / key
    if not entry.exists():
        return
    with contextlib.suppress(OSError):
        aside = Path(tempfile.mkdtemp(prefix=f".{key}.broken-", dir=entry.parent))
        os.replace(entry, aside / "entry")
        entry = aside
    shutil.rmtree(entry, ignore_errors=True)


def build_entry(
    key: str, build: Callable[[Path], dict[str, np.ndarray]], *, needs_bytes: int = 0
) -> Path | None:
    """Build entry `key`: `build(folder)` writes its large arrays as `<name>.npy` into `folder` and
    returns the small ones, which go to `index.npz`; the folder is then renamed into place.

    Returns the entry's folder, or None when the cache cannot be written (a read-only home, a full
    disk: a warning, and the caller builds in a temporary folder of its own instead).
    """
    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if needs_bytes and shutil.disk_usage(root).free < needs_bytes + (64 << 20):
            free = shutil.disk_usage(root).free
            warnings.warn(
                f"the fewbit cache {root} has {free / 2**30:.1f} GiB free; decoding needs "
                f"{needs_bytes / 2**30:.1f} GiB: free space or set FEWBIT_CACHE to a larger disk",
                stacklevel=3,
            )
            return None
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    except OSError as exc:
        warnings.warn(f"could not write the fewbit cache under {root}: {exc.strerror or exc}", stacklevel=3)
        return None
    try:
        small = build(tmp)
        with open(tmp / INDEX_NAME, "wb") as f:
            np.savez(f, **small)
            f.flush()
            os.fsync(f.fileno())
        entry = root / key
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():  # not a concurrent build that finished first: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return entry
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"could not write the fewbit cache entry {root / key}: {exc.strerror or exc}", stacklevel=3)
        return None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_arrays(
    key: str, build: Callable[[], dict[str, np.ndarray]], enabled: bool = True, *, large: Iterable[str] = ("images",)
) -> dict[str, np.ndarray]:
    """The arrays stored under `key`, built by `build()` and saved on a miss; `large` ones are memory maps.

    Every key `build()` returns must come back: a cached entry lacking one is rebuilt.
    """
    large = tuple(large)
    if not enabled:
        return build()
    arrays: dict[str, np.ndarray] = {}

    def write(folder: Path) -> dict[str, np.ndarray]:
        arrays.update(build())
        for name in large:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(arrays[name]), allow_pickle=False)
        names = sorted(set(arrays) - set(large))
        return {"_names": np.array(names, dtype=str), **{n: arrays[n] for n in names}}

    hit = _read_named(key, large)
    if hit is not None:
        return hit
    entry = build_entry(key, write)
    if entry is None:
        return arrays if arrays else build()
    again = _read_named(key, large)
    return again if again is not None else arrays


def _read_named(key: str, large: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    index = read_entry(key, (), ("_names",))
    if index is None:
        return None
    return read_entry(key, large, tuple(str(n) for n in index["_names"]))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
