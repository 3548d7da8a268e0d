"""Run the `fewbit` CLI in a child process under a memory limit (RLIMIT_AS) and a time limit.

A hostile input that makes fewbit allocate or loop without bound then fails the test quickly
(the child hits the limit, or is killed at the timeout) instead of taking the machine down.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MEMORY_LIMIT = 2 << 30  # address space: importing torch needs about 1 GiB of it
TIME_LIMIT = 90.0


def run_bounded(
    argv: Sequence[str], cwd: Path, *, memory: int = MEMORY_LIMIT, timeout: float = TIME_LIMIT
) -> subprocess.CompletedProcess[str]:
    """`python -m fewbit *argv` with at most `memory` bytes of address space and `timeout` seconds."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "fewbit", *argv], cwd=cwd, env=env, preexec_fn=limit,
        capture_output=True, text=True, timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single `fewbit: error:` line of a refused command (asserting exit 2 and no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("fewbit: error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]
