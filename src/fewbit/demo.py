"""The demo: float32 vs 4-bit/8-bit Conv-4, ProtoNet and ANIL, meta-trained on glyphs, with a report."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fewbit.compress import size_report
from fewbit.data.episodes import EpisodeSampler
from fewbit.recipes import load_recipe
from fewbit.report.document import Section, write_report
from fewbit.report.plots import plot_task
from fewbit.sweep.grid import SweepConfig
from fewbit.sweep.runner import MD_COLUMNS, format_row, run_sweep
from fewbit.train import load_run
from fewbit.train.run import eval_dataset

COMPRESSION = "quant:w4a8"
# The demo computes with one thread unless told otherwise: float sums taken in another order (more
# threads split them differently) move a weight across a 4-bit rounding boundary now and then, and
# meta-training amplifies that, so the w4a8 rows differ by up to a few points between thread counts
# (float32 ones far less). One thread is what every machine has: the README's table is this setting.
DEMO_THREADS = 1


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work the demo does."""

    steps: int
    meta_batch: int
    queries: int
    val_every: int
    val_tasks: int
    eval_tasks: int


FULL = Budget(steps=200, meta_batch=4, queries=10, val_every=100, val_tasks=50, eval_tasks=600)
QUICK = Budget(steps=10, meta_batch=2, queries=5, val_every=10, val_tasks=5, eval_tasks=20)


def demo_sweep(budget: Budget, device: str = "auto") -> SweepConfig:
    """The demo's grid (the `demo` recipe: {float32, w4a8} x two algorithms, compression-aware, on
    glyphs) with `budget` on top."""
    recipe = load_recipe("demo")
    base = dict(recipe.pop("base"))
    base.update(queries=budget.queries, meta_batch=budget.meta_batch, steps=budget.steps, val_every=budget.val_every,
                val_tasks=budget.val_tasks, checkpoint_every=budget.steps, device=device)
    return SweepConfig.from_dict({**recipe, "base": base, "eval_tasks": budget.eval_tasks})


def run_demo(out_dir: str | Path = "demo-report", *, quick: bool = False, device: str = "auto",
             progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Train, evaluate and report; returns the result rows and the report paths (`threads`: CPU
    threads to compute with, default DEMO_THREADS, so that the figures are the same on every machine).

        >>> result = run_demo("demo-report")
        >>> result["summary"]  # one row per algorithm: float32 and w4a8 accuracy, bytes, adapt ms
    """

    out = Path(out_dir)
    threads = DEMO_THREADS if threads is None else threads
    budget = QUICK if quick else FULL
    sweep = demo_sweep(budget, device)
    started = time.perf_counter()
    rows = run_sweep(sweep, out / "runs", progress=progress, threads=threads)
    shutil.copyfile(out / "runs" / "pareto.png", out / "pareto.png")

    # a test task with the predictions of the first algorithm's compressed model
    shown = sweep.algorithms[0]
    compressed = next(r for r in rows if r["algorithm"] == shown and r["bits"] == 4)
    run = load_run(out / "runs" / "cells" / compressed["cell"] / "run")
    test = eval_dataset("glyphs", "test")
    sampler = EpisodeSampler(test, ways=5, shots=1, queries=3, generator=torch.Generator().manual_seed(7))
    task, names = sampler.sample_named(1)
    with torch.no_grad():
        preds = run.predictor()(task.to(run.device)).argmax(-1)[0].cpu()
    plot_task(task, out / "task.png", predictions=preds, class_names=names[0],
              title=f"held-out glyphs, 5-way 1-shot: w4a8 {shown} predictions (green right, red wrong)")
    sizes = size_report(run.model)
    seconds = time.perf_counter() - started

    by = {(r["algorithm"], r["bits"]): r for r in rows}
    summary = []
    for alg in sweep.algorithms:
        f, c = by[(alg, 32)], by[(alg, 4)]
        summary.append([alg, f"{100 * f['accuracy']:.2f} +- {100 * f['ci95']:.2f}",
                        f"{100 * c['accuracy']:.2f} +- {100 * c['ci95']:.2f}",
                        f"{100 * (c['accuracy'] - f['accuracy']):+.2f}", f"{f['bytes']:,}", f"{c['bytes']:,}",
                        f"{c['ratio']:.1f}x", f"{c['adapt_latency_ms']:.1f}"])
    summary_headers = ["algorithm", "float32 acc %", "w4a8 acc %", "change (points)", "float32 bytes",
                       "w4a8 bytes", "smaller", "w4a8 adapt ms"]
    intro = (
        f"Conv-4 meta-trained on the embedded glyphs data (train alphabets), evaluated on "
        f"{budget.eval_tasks} seeded 5-way 1-shot tasks from held-out alphabets (95% intervals). "
        f"Compressed models were meta-trained with 4-bit weights and 8-bit activations active in the "
        f"outer and inner loops (`{COMPRESSION}`). Budget: {budget.steps} outer steps of "
        f"{budget.meta_batch} tasks each{' (quick mode)' if quick else ''}; total {seconds:.0f} s."
    )
    sections = [
        Section("Summary", [intro], summary_headers, summary),
        Section("All runs", ["Sizes are bytes as stored (packed codes, scales, masks); adapt ms is the median "
                             "time to adapt to one task and classify its queries; adapt memory is what one "
                             "inner step needs on the device."], MD_COLUMNS, [format_row(r) for r in rows]),
        Section("Accuracy against size", [], images=["pareto.png"]),
        Section("A held-out task", [f"Support images (blue) and queries; the compressed {shown} model's "
                                    "predictions are green when right, red when wrong."], images=["task.png"]),
        Section(f"Where the bytes are (w4a8 {shown})", [], ["layer", "params", "bits", "sparsity", "bytes"],
                [[layer.name, layer.params, layer.bits, f"{layer.sparsity:.2f}", layer.bytes]
                 for layer in sizes.layers]),
    ]
    md, html = write_report(out, "fewbit demo: few shots, few bits", sections)
    return {"rows": rows, "summary_headers": summary_headers, "summary": summary, "report_md": str(md),
            "report_html": str(html), "seconds": round(seconds, 1), "task_classes": names[0]}
