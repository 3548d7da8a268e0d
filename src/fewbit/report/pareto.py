"""The accuracy-versus-bytes Pareto front and its plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewbit.report.plots import _pyplot, save_figure

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (bytes, accuracy) that no other point beats on both (fewer bytes, higher accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """PNG: accuracy (with 95% CI bars) against bytes (log scale), one marker per algorithm, front drawn.

    Each row needs `algorithm`, `bytes`, `accuracy`, `ci95`, and a `label`.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    algorithms = list(dict.fromkeys(r["algorithm"] for r in rows))
    for k, alg in enumerate(algorithms):
        mine = [r for r in rows if r["algorithm"] == alg]
        ax.errorbar(
            [r["bytes"] for r in mine], [100 * r["accuracy"] for r in mine], yerr=[100 * r["ci95"] for r in mine],
            fmt=MARKERS[k % len(MARKERS)], capsize=2, label=alg, alpha=0.85,
        )
        for r in mine:
            ax.annotate(r.get("label", ""), (r["bytes"], 100 * r["accuracy"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    pts = [(r["bytes"], r["accuracy"]) for r in rows]
    front = sorted(pareto_front(pts), key=lambda i: pts[i][0])
    if front:
        ax.step([pts[i][0] for i in front], [100 * pts[i][1] for i in front], where="post",
                color="black", lw=1, ls="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("model size (bytes, as stored)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
