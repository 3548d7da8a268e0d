"""Timing shared by the benchmarks' subprocess scripts (numpy only: a runtime process stays torch-free)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def clock(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median and minimum wall and CPU milliseconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return {"wall_ms_median": 1e3 * float(np.median(wall)), "wall_ms_min": 1e3 * min(wall),
            "cpu_ms_median": 1e3 * float(np.median(cpu)), "cpu_ms_min": 1e3 * min(cpu)}
