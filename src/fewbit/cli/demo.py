"""`fewbit demo`: the end-to-end job on the embedded glyphs data, needing no download."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fewbit.cli.common import Output, add_common, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on the embedded glyphs data")
    p.add_argument("--quick", action="store_true", help="a smaller budget (for CI)")
    p.add_argument("--out", default="demo-report", help="report folder (default demo-report)")
    add_common(p, device=True)
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> Output:
    from fewbit.data.episodes import EpisodeSampler
    from fewbit.data.sources import load_source
    from fewbit.evaluation import evaluate, pixel_prototypes
    from fewbit.report.plots import plot_task

    out = Path(args.out)
    source = load_source("glyphs")
    test = source.split("test")  # type: ignore[union-attr]
    task = EpisodeSampler(test, ways=5, shots=1, queries=3, generator=torch.Generator().manual_seed(0)).sample(1)
    preds = pixel_prototypes(task).argmax(-1)[0]
    picture = plot_task(task, out / "task.png", predictions=preds, title="glyphs test task, pixel prototypes")
    rows = []
    results = {}
    for shots in (1, 5):
        r = evaluate(pixel_prototypes, test, ways=5, shots=shots, queries=15, tasks=100 if args.quick else 600)
        results[f"5way{shots}shot"] = r.to_dict()
        rows.append(["pixel prototypes", f"5-way {shots}-shot", f"{100 * r.accuracy:.2f} +- {100 * r.ci95:.2f}"])
    text = table(["model", "task", "accuracy %"], rows) + f"\nwrote {picture}"
    return Output({"results": results, "task_png": str(picture)}, text)
