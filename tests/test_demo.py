import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick_writes_every_file_of_the_report(tmp_path):
    out = tmp_path / "demo-report"
    done = subprocess.run([sys.executable, "-m", "fewbit", "demo", "--quick", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for name in ("report.md", "report.html", "pareto.png", "task.png", "runs/results.csv", "runs/results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "![" in md and "| algorithm |" in md and "w4a8" in md
    html = (out / "report.html").read_text()
    assert '<img src="pareto.png"' in html and '<img src="task.png"' in html
    from fewbit.train.run import eval_dataset

    held_out = set(eval_dataset("glyphs", "test").classes)  # the task picture names its classes
    assert len(result["task_classes"]) == 5 and set(result["task_classes"]) <= held_out
    rows = {(r["algorithm"], r["bits"]): r for r in result["rows"]}
    assert set(rows) == {("protonet", 32), ("protonet", 4), ("anil", 32), ("anil", 4)}
    for alg in ("protonet", "anil"):
        assert rows[(alg, 4)]["bytes"] * 7 <= rows[(alg, 32)]["bytes"]
        row = rows[(alg, 4)]
        assert row["accuracy"] - row["ci95"] > 0.2, row  # 5-way: above chance with 95% confidence


@pytest.mark.parametrize(("given", "used"), [(None, 1), (2, 2)])
def test_the_demo_computes_with_one_thread_unless_told(monkeypatch, tmp_path, given, used):
    """w4a8 training depends on the thread count (issue 26: the README's w4a8 rows did not reproduce),
    so the demo fixes it: 1 thread, the setting of the README's table, unless --threads is given."""
    import fewbit.demo

    seen = {}

    def stop(sweep, root, **kwargs):  # noqa: ANN001, ANN003, ANN202  (stands in for the training)
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(fewbit.demo, "run_sweep", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        fewbit.demo.run_demo(tmp_path, quick=True, progress=False, threads=given)
    assert seen["threads"] == used
