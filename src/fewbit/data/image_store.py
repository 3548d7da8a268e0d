"""Decode a list of image files once into a cached, memory-mapped uint8 store, on all cores.

Used by the `folder:` and `csvsplit:` sources. The cache key is a signature of the files (relative
name, size and modification time of each) and of the decoding rule, so an edited, added or
removed file makes a new entry. Files that cannot be decoded are skipped, each named in a warning.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fewbit.data.cache import build_entry, read_entry
from fewbit.errors import DataError
from fewbit.runtime.preprocess import (
    ImagePreprocessing,
    colour_flags,
    decode_file_rows,
    decode_into,
)

STORE_VERSION = 1  # bump when decoding changes, so that stale entries are never read
PARALLEL_FROM = 256  # fewer files than this decode in-process (starting workers would cost more)
CHUNK = 64  # files per worker task
MAX_STORE_BYTES = 256 << 30  # a data set that would decode to more than this is refused up front
_SMALL = ("ok", "sums", "errors", "error_rows", "channels")


@dataclasses.dataclass(frozen=True, eq=False)
class ImageStore:
    """Decoded images: `pixels [N, C, S, S]` uint8 (memory-mapped when cached) for the N files given,
    `ok[i]` whether file i decoded, `sums [N, C, 2]` the per-image sums of [0, 1] values and of
    their squares (for normalisation statistics), and the message of each file that did not decode."""

    pixels: np.ndarray
    ok: np.ndarray
    sums: np.ndarray
    errors: dict[int, str]

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[1])

    def channel_stats(self, rows: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the [0, 1] pixel values of `rows`."""
        rows = rows[self.ok[rows]]
        if rows.size == 0:
            return (0.0,) * self.channels, (1.0,) * self.channels
        pixels_per_image = self.pixels.shape[2] * self.pixels.shape[3]
        total = self.sums[rows].sum(axis=0)  # [C, 2]
        count = rows.size * pixels_per_image
        mean = total[:, 0] / count
        var = np.maximum(total[:, 1] / count - mean**2, 0.0)
        std = np.maximum(np.sqrt(var), 1e-3)  # a constant channel must not divide by zero
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def signature(root: Path, names: Sequence[str]) -> str:
    """sha256 of each file's name, size and modification time (a change to any file changes it).

    Names are hashed as the file system's bytes, so a name that is not UTF-8 (listed with
    surrogate escapes) is hashed as it is on disk.
    """
    h = hashlib.sha256()
    for name in names:
        try:
            info = os.stat(root / name)
            h.update(os.fsencode(name) + f"\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(name) + b"\0missing\n")
    return h.hexdigest()


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def decode_store(
    root: Path,
    names: Sequence[str],
    rule: ImagePreprocessing,
    *,
    detect_channels: bool,
    label: str,
    progress: bool = True,
    workers: int | None = None,
) -> ImageStore:
    """The decoded images of `root/names[i]`, cached; channels detected first when `detect_channels`.

    `rule.channels` is used as given unless `detect_channels`, in which case the store is RGB
    when any image holds colour and greyscale otherwise.
    """
    paths = [str(root / n) for n in names]
    workers = max(1, min(workers or available_cores(), 8))
    key_rule = rule.to_dict() | {"channels": "auto" if detect_channels else rule.channels}
    parts = [STORE_VERSION, key_rule, signature(root, names)]
    key = f"images-{hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]}"
    hit = read_entry(key, ("pixels",), _SMALL)
    if hit is not None and len(hit["ok"]) == len(names) and hit["pixels"].shape[0] == len(names):
        store = _store(hit)
        _warn_errors(store, names, label, cached=True)
        return store
    scan_errors: dict[int, str] = {}
    channels = rule.channels
    if detect_channels:
        channels, scan_errors = _detect_channels(paths, workers, progress, label)
    rule = rule.replace(channels=channels)
    shape = (len(names), channels, rule.image_size, rule.image_size)
    nbytes = int(np.prod(shape))
    if nbytes > MAX_STORE_BYTES:
        raise DataError(f"{label}: {len(names):,} images of {shape[1:]} would decode to {nbytes / 2**30:.0f} GiB "
                        f"(limit {MAX_STORE_BYTES >> 30} GiB); use a smaller --image-size or fewer images")
    arrays: dict[str, np.ndarray] = {}

    def build(folder: Path) -> dict[str, np.ndarray]:
        npy = folder / "pixels.npy"
        out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=shape)
        out.flush()
        del out
        small = _decode(str(npy), paths, rule, workers, progress, label, scan_errors)
        arrays.update(small)
        return small

    entry = build_entry(key, build, needs_bytes=nbytes)
    if entry is not None:
        again = read_entry(key, ("pixels",), _SMALL)
        if again is not None:
            store = _store(again)
            _warn_errors(store, names, label, cached=False)
            return store
    # No cache to write into: decode into memory.
    pixels = np.zeros(shape, np.uint8)
    errors, sums = decode_into(pixels, 0, paths, rule.to_dict())
    store = ImageStore(pixels, np.array([e is None for e in errors]), sums,
                       {i: e for i, e in enumerate(errors) if e is not None} | scan_errors)
    _warn_errors(store, names, label, cached=False)
    return store


def _detect_channels(
    paths: list[str], workers: int, progress: bool, label: str
) -> tuple[int, dict[int, str]]:
    """3 when any image holds colour, else 1; stops at the first colour image found."""
    errors: dict[int, str] = {}
    bar = tqdm(total=len(paths), desc=f"scanning {label}", unit="img", disable=not progress, leave=False)
    try:
        for start, flags in _map_chunks(colour_flags, paths, workers, stop=lambda f: True in f):
            bar.update(len(flags))
            for i, flag in enumerate(flags):
                if isinstance(flag, str):
                    errors[start + i] = flag
                elif flag:
                    return 3, {}
    finally:
        bar.close()
    return 1, errors


def _decode(
    npy: str, paths: list[str], rule: ImagePreprocessing, workers: int, progress: bool, label: str,
    scan_errors: dict[int, str],
) -> dict[str, np.ndarray]:
    channels = rule.channels
    ok = np.zeros(len(paths), bool)
    sums = np.zeros((len(paths), channels, 2), np.float64)
    error_rows, error_text = [], []
    bar = tqdm(total=len(paths), desc=f"decoding {label}", unit="img", disable=not progress, leave=False)
    try:
        for start, (errors, chunk_sums) in _map_chunks(
            decode_file_rows, paths, workers, extra=(npy, rule.to_dict())
        ):
            for i, message in enumerate(errors):
                if message is None:
                    ok[start + i] = True
                else:
                    error_rows.append(start + i)
                    error_text.append(message)
            sums[start : start + len(errors)] = chunk_sums
            bar.update(len(errors))
    finally:
        bar.close()
    for row, message in scan_errors.items():
        if ok[row]:  # unreadable while scanning, readable now: keep it
            continue
        if row not in error_rows:
            error_rows.append(row)
            error_text.append(message)
    return {
        "ok": ok,
        "sums": sums,
        "errors": np.array(error_text, dtype=str),
        "error_rows": np.array(error_rows, dtype=np.int64),
        "channels": np.array(channels),
    }


def _map_chunks(fn, paths, workers, *, extra=(), stop=None):  # type: ignore[no-untyped-def]
    """Yield (start, fn(chunk)) for chunks of `paths` (worker processes for large lists), in order."""
    chunks = [(s, paths[s : s + CHUNK]) for s in range(0, len(paths), CHUNK)]
    if workers == 1 or len(paths) < PARALLEL_FROM:
        for start, chunk in chunks:
            result = fn(*extra[:1], start, chunk, *extra[1:]) if extra else fn(chunk)
            yield start, result
            if stop is not None and stop(result):
                return
        return
    # Forked workers (as PyTorch's DataLoader uses on Linux): a spawned one would re-run a user's
    # script that lacks an `if __name__ == "__main__"` guard. The workers use numpy and Pillow only.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            (start, pool.submit(fn, *extra[:1], start, chunk, *extra[1:]) if extra else pool.submit(fn, chunk))
            for start, chunk in chunks
        ]
        try:
            for start, future in futures:
                result = future.result()
                yield start, result
                if stop is not None and stop(result):
                    return
        finally:
            for _, future in futures:
                future.cancel()


def _store(arrays: dict[str, np.ndarray]) -> ImageStore:
    errors = {int(r): str(t) for r, t in zip(arrays["error_rows"], arrays["errors"])}
    return ImageStore(arrays["pixels"], np.asarray(arrays["ok"], bool), arrays["sums"], errors)


def _warn_errors(store: ImageStore, names: Sequence[str], label: str, *, cached: bool) -> None:
    if not store.errors:
        return
    rows = sorted(store.errors)
    shown = "; ".join(store.errors[r] for r in rows[:3])
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    warnings.warn(
        f"{label}: skipped {len(rows)} unreadable image(s){' (as cached)' if cached else ''}: {shown}{more}",
        stacklevel=3,
    )
