import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewbit.cli import main
from fewbit.errors import ConfigError
from fewbit.sweep.grid import Cell, SweepConfig
from tests.conftest import make_omniglot_zip


def test_grid_cells_and_specs():
    cfg = SweepConfig(bits=(32, 4, 2), sparsity=(0.0, 0.5), algorithms=("protonet",), modes=("aware", "posthoc"))
    cells = cfg.cells()
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids))
    assert "protonet-w32-s0-float" in ids  # the float reference appears once, not per mode
    assert len(cells) == 1 + 5 * 2
    assert Cell("protonet", 4, 0.5, "aware").spec(8) == "prune:0.5,quant:w4a8"
    assert Cell("protonet", 32, 0.75, "aware").spec(8) == "prune:0.75"
    assert Cell("protonet", 2, 0.0, "aware").spec(None) == "quant:w2"
    assert Cell("protonet", 32, 0.0, "float").spec(8) is None


def test_posthoc_grid_without_float_bits_still_has_its_reference():
    cells = SweepConfig(bits=(4,), sparsity=(0.0,), algorithms=("anil",), modes=("posthoc",)).cells()
    assert [c.cell_id for c in cells] == ["anil-w4-s0-posthoc", "anil-w32-s0-float"]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"bits": (32, 0)}, "anil-w0-s0-aware"),
        ({"bits": (9,)}, "bits must be 1..8 or 32"),
        ({"sparsity": (0.0, 1.0)}, "sparsity must be in [0, 1)"),
        ({"algorithms": ("anil", "magic")}, "unknown algorithm 'magic'"),
        ({"modes": ("aware", "later")}, "mode must be one of"),
    ],
)
def test_invalid_cell_rejected_before_work_naming_the_cell(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        SweepConfig(**{"algorithms": ("anil",), **kwargs})
    assert needle in str(err.value)
    assert "sweep cell" in str(err.value)


def test_cli_invalid_grid_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--dataset", "sinusoid", "--bits", "32,0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "sweep cell" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _sweep_args(data: Path, out: Path) -> list[str]:
    return ["sweep", "--dataset", f"omniglot:{data}", "--algorithms", "protonet", "--bits", "32,4",
            "--sparsity", "0,0.5", "--modes", "aware,posthoc", "--steps", "2", "--meta-batch", "1",
            "--queries", "2", "--eval-tasks", "4", "--device", "cpu", "--out", str(out)]


@pytest.mark.slow
def test_sweep_resumes_after_a_kill(tmp_path):
    data = make_omniglot_zip(tmp_path / "bg.zip", alphabets=5, characters=6, drawings=20)
    out = tmp_path / "sweep"
    env = {**os.environ, "FEWBIT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "fewbit", *_sweep_args(data, out), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    results = lambda: sorted(out.glob("cells/*/result.json"))  # noqa: E731
    while time.time() < deadline and len(results()) < 2 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in results()}
    assert first, "no cell finished before the kill"
    total = len(SweepConfig(bits=(32, 4), sparsity=(0.0, 0.5), algorithms=("protonet",)).cells())
    assert len(first) < total
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)["rows"]
    assert len(rows) == total
    for path, mtime in first.items():
        assert path.stat().st_mtime_ns == mtime  # finished cells were reused, not rerun
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == total + 1
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["bytes"] > 0
    by = {r["cell"]: r for r in rows}
    assert by["protonet-w4-s0-aware"]["bytes"] * 7 < by["protonet-w32-s0-float"]["bytes"]
    assert by["protonet-w4-s0.5-posthoc"]["bytes"] < by["protonet-w4-s0-posthoc"]["bytes"]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_sweep_configs_load(path):
    from fewbit.train import TrainConfig

    sweep = SweepConfig.from_yaml(path)
    assert sweep.cells()
    TrainConfig.from_dict(dict(sweep.base))
