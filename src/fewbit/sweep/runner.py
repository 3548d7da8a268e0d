"""Run a sweep in parallel worker processes, resumably, and write its table and Pareto plot."""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fewbit._io import atomic_write_json, atomic_write_text
from fewbit._lock import locked
from fewbit.errors import ConfigError
from fewbit.report.pareto import plot_pareto
from fewbit.report.tables import csv_text, markdown_table
from fewbit.sweep.cell import finished, run_cell
from fewbit.sweep.grid import Cell, SweepConfig
from fewbit.threads import default_threads, limited, set_threads

COLUMNS = ("cell", "algorithm", "bits", "sparsity", "mode", "accuracy", "ci95", "bytes", "ratio",
           "adapt_latency_ms", "adapt_memory_bytes", "adapt_scope", "train_seconds")
MD_COLUMNS = ("cell", "algorithm", "bits", "sparsity", "mode", "accuracy % (95% CI)", "bytes", "x smaller",
              "adapt ms", "adapt memory B", "scope", "train s")


def _worker(sweep_dict: dict[str, Any], cell: Cell, root: str, threads: int) -> dict[str, Any]:
    import torch  # noqa: F401  (loaded first, so that set_threads sizes its pool)

    set_threads(threads)
    return run_cell(SweepConfig.from_dict(sweep_dict), cell, Path(root))


def run_sweep(
    sweep: SweepConfig,
    out_dir: str | Path,
    *,
    workers: int = 1,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished cell of `sweep` into `out_dir`; returns all rows and writes the table and plot.

    Finished cells (those with a result.json) are reused. Float and compression-aware cells run
    first; post-hoc cells follow, since they start from the float model of their algorithm.
    `threads` is per worker process (default: the available cores divided among the workers; with
    one worker, which runs in this process, no more than this process already uses).
    The sweep folder is locked while it runs (InUseError for a second sweep into it).
    """
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out: {root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    with locked(root, what="sweep"):
        return _run_locked(sweep, root, workers, progress, on_result, threads)


def _run_locked(
    sweep: SweepConfig,
    root: Path,
    workers: int,
    progress: bool,
    on_result: Callable[[dict[str, Any]], None] | None,
    threads: int | None,
) -> list[dict[str, Any]]:
    atomic_write_json(root / "sweep.json", sweep.to_dict())
    cells = sweep.cells()
    phases = [[c for c in cells if c.mode != "posthoc"], [c for c in cells if c.mode == "posthoc"]]
    rows: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(cells), desc="sweep", disable=not progress)
    for phase in phases:
        todo = []
        for cell in phase:
            done = finished(root, cell)
            if done is not None:
                rows[cell.cell_id] = done
                bar.update(1)
            else:
                todo.append(cell)
        if workers <= 1:
            with limited(threads):
                for cell in todo:
                    rows[cell.cell_id] = run_cell(sweep, cell, root)
                    _report(bar, rows[cell.cell_id], on_result)
        elif todo:
            ctx = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                per_worker = threads or default_threads(workers)
                jobs = {pool.submit(_worker, sweep.to_dict(), c, str(root), per_worker): c for c in todo}
                for job in futures.as_completed(jobs):
                    row = job.result()
                    rows[row["cell"]] = row
                    _report(bar, row, on_result)
    bar.close()
    ordered = [rows[c.cell_id] for c in cells]
    write_outputs(ordered, root)
    return ordered


def _report(bar: Any, row: dict[str, Any], on_result: Callable[[dict[str, Any]], None] | None) -> None:
    bar.update(1)
    bar.set_postfix(last=f"{row['cell']} {100 * row['accuracy']:.1f}%")
    if on_result is not None:
        on_result(row)


def write_outputs(rows: list[dict[str, Any]], root: Path) -> dict[str, Path]:
    """`results.csv`, `results.json`, `results.md` and `pareto.png` in `root`."""

    table_rows = [[r.get(k, "") for k in COLUMNS] for r in rows]
    atomic_write_text(root / "results.csv", csv_text(COLUMNS, table_rows))
    atomic_write_json(root / "results.json", {"rows": rows})
    atomic_write_text(root / "results.md", markdown_table(MD_COLUMNS, [format_row(r) for r in rows]) + "\n")
    png = plot_pareto(rows, root / "pareto.png", title="accuracy vs bytes")
    return {"csv": root / "results.csv", "json": root / "results.json", "md": root / "results.md", "png": png}


def format_row(r: dict[str, Any]) -> list[Any]:
    """A row for people: accuracy as `xx.xx +- y.yy` percent, bytes with separators."""
    return [
        r["cell"], r["algorithm"], r["bits"], f"{r['sparsity']:g}", r["mode"],
        f"{100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}", f"{r['bytes']:,}", f"{r['ratio']:.2f}",
        f"{r['adapt_latency_ms']:.1f}", f"{r['adapt_memory_bytes']:,}", r["adapt_scope"], r["train_seconds"],
    ]
