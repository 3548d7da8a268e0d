"""SweepConfig's grid at its limit: bounded before any work, duplicates merged in linear time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fewbit.cli import main
from fewbit.errors import ConfigError
from fewbit.meta import ALGORITHMS
from fewbit.sweep.grid import Cell, SweepConfig

BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
MAX_CELLS = 10_000  # docs/bad-input.md


def test_the_documented_limit() -> None:
    from fewbit.sweep.grid import MAX_CELLS as limit

    assert limit == MAX_CELLS


def test_a_grid_over_the_cell_limit_is_refused_before_any_work(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    """144,000 cells never finished building (a quadratic duplicate check); now one line at once."""
    sparsity = ",".join(["0.5"] * 80_000)  # the product counts, duplicates or not
    started = time.perf_counter()
    code = main(["sweep", "--out", str(tmp_path / "s"), "--bits", "4", "--sparsity", sparsity,
                 "--modes", "aware,posthoc"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and time.perf_counter() - started < 10
    assert "has 160,000 cells, more than the limit of 10,000" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="1 bits x 10,001 sparsities x 1 algorithms x 1 modes"):
        SweepConfig(bits=(4,), sparsity=[i / 20_002 for i in range(MAX_CELLS + 1)], modes=("aware",))


def test_a_grid_at_the_limit_builds_in_linear_time() -> None:
    """14,409 distinct cells took 49 s: each was looked up in a list of all those before it."""
    per = MAX_CELLS // (len(BITS) * len(ALGORITHMS) * 2)
    sparsity = [i / (2 * per) for i in range(per)]
    started = time.perf_counter()
    sweep = SweepConfig(bits=BITS, sparsity=sparsity, algorithms=tuple(ALGORITHMS), modes=("aware", "posthoc"))
    cells = sweep.cells()
    assert time.perf_counter() - started < 5
    # bits 32 at sparsity 0 is one float cell per algorithm; every other combination is its own
    assert len(cells) == len(ALGORITHMS) * (len(BITS) * per * 2 - 1)
    assert len(set(cells)) == len(cells)


def test_duplicates_are_merged_keeping_the_grid_order() -> None:
    sweep = SweepConfig(bits=(4, 32, 4), sparsity=(0.0, 0.5, 0.0), algorithms=("protonet",), modes=("aware", "posthoc"))
    assert sweep.cells() == [
        Cell("protonet", 4, 0.0, "aware"), Cell("protonet", 4, 0.0, "posthoc"),
        Cell("protonet", 4, 0.5, "aware"), Cell("protonet", 4, 0.5, "posthoc"),
        Cell("protonet", 32, 0.0, "float"),
        Cell("protonet", 32, 0.5, "aware"), Cell("protonet", 32, 0.5, "posthoc"),
    ]
