"""`examples/mlp_digits.py` runs and learns."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlp_digits.py"


def test_example_runs_and_learns(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")  # conftest runs it on one thread
    out = capsys.readouterr().out
    match = re.search(r"test accuracy ([\d.]+)% in (\d+) bytes", out)
    assert match, out
    assert float(match.group(1)) > 90.0 and int(match.group(2)) == 9332
