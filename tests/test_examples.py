import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_end_to_end_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "end_to_end.py"), "--steps", "2", "--tasks", "10", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "5-way 1-shot accuracy" in out.stdout
    assert "agrees with PyTorch" in out.stdout
    assert (tmp_path / "model.fewbit").is_file()


@pytest.mark.slow
def test_own_images_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_images.py"), "--steps", "100", "--out", str(tmp_path / "own")],
        capture_output=True, text=True, timeout=900, env={**os.environ, "FEWBIT_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'channels': 3" in out.stdout and "5-way 1-shot accuracy" in out.stdout
    right = int(out.stdout.split("numpy runtime: ")[1].split("%")[0])
    assert right >= 50  # 5-way: chance is 20%
    assert (tmp_path / "own" / "model.fewbit").is_file()


@pytest.mark.slow
def test_own_signals_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_signals.py"), "--steps", "60", "--out", str(tmp_path / "sig")],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'channels': 3" in out.stdout and "5-way 1-shot accuracy" in out.stdout
    right = int(out.stdout.split("numpy runtime: ")[1].split("%")[0])
    assert right >= 50  # 5-way: chance is 20%
    # the command the example prints adapts the same artifact from the command line
    adapt = subprocess.run(
        [sys.executable, "-m", "fewbit", "adapt", str(tmp_path / "sig" / "model.fewbit"), "--support",
         str(tmp_path / "sig" / "support"), "--query", str(tmp_path / "sig" / "query"), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert adapt.returncode == 0, adapt.stderr[-3000:]
    assert '"accuracy"' in adapt.stdout
