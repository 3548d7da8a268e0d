"""How many CPU threads fewbit computes with: `--threads N`, or a default that shares the cores.

PyTorch starts one thread per core and numpy's BLAS does the same; two such processes on the same
cores (a sweep's workers, or any other job) slow each other down many times over. The default is
the cores this process may run on (its CPU affinity and cgroup quota, not the machine's count),
divided among `workers`; `OMP_NUM_THREADS`, when set, is taken as the user's choice. Either way
a process never computes with more threads than it has cores: a thousand threads thrash, and
starting them can fail outright (`ImportError: failed to map segment`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_USER_OMP = os.environ.get("OMP_NUM_THREADS", "")  # as the user set it, before fewbit sets it itself


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def default_threads(workers: int = 1) -> int:
    """Threads per worker when `--threads` is not given (`OMP_NUM_THREADS` up to the available cores)."""
    if _USER_OMP.isdigit() and int(_USER_OMP) > 0:
        return min(int(_USER_OMP), available_cores())
    return max(1, available_cores() // max(1, workers))


def bounded_threads(threads: int) -> int:
    """`threads`, or the cores this process may use when that is fewer (with a warning saying so);
    ValueError below 1."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    cores = available_cores()
    if threads > cores:
        warnings.warn(f"{threads} threads asked for, but this process may use {cores} core(s); "
                      f"computing with {cores}", stacklevel=2)
        return cores
    return threads


def set_threads(threads: int) -> None:
    """Compute with `threads` threads from now on (a worker process): torch's pool when torch is
    loaded, numpy's BLAS through threadpoolctl when installed, and the environment of child processes;
    never more than the available cores (`bounded_threads`)."""
    threads = bounded_threads(threads)
    for name in ENV_VARS:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")  # the numpy runtime never imports torch just for this
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy loaded before this point keeps its BLAS thread count
        return
    threadpool_limits(threads, user_api="blas")


@contextlib.contextmanager
def limited(threads: int | None, workers: int = 1) -> Iterator[int]:
    """Compute with `threads` threads inside the block (None: `default_threads(workers)`, never more
    than torch already uses; never more than the available cores, `bounded_threads`), restoring the
    previous settings after it; yields the count used."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if threads is None:
        threads = default_threads(workers)
        if before is not None and workers <= 1:
            threads = min(threads, before)
    else:
        threads = bounded_threads(threads)
    env_before = {name: os.environ.get(name) for name in ENV_VARS}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        blas: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        blas = threadpool_limits(threads, user_api="blas")
    try:
        for name in ENV_VARS:
            os.environ[name] = str(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        with blas:
            yield threads
    finally:
        for name, value in env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch is not None and before is not None:
            torch.set_num_threads(before)
