"""Pictures: a sampled task (support and query grid, with predictions when given)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch

from fewbit._io import atomic_write_bytes
from fewbit.data.task import Task


def _pyplot():  # matplotlib is imported lazily and always with a file-only backend
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: object, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_task(
    task: Task,
    path: str | Path,
    *,
    predictions: torch.Tensor | None = None,
    max_queries_per_class: int = 3,
    title: str = "",
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    class_names: Sequence[str] | None = None,
) -> Path:
    """A PNG of the first task in `task`: one row per class, support then queries, each row
    labelled with its class's name (`class_names[label]`, e.g. from `EpisodeSampler.sample_named`)
    or `class LABEL` without them.

    With `predictions` (`[N*Q]` labels for the first task), query frames are green when
    right and red when wrong. `mean`/`std` undo the inputs' normalisation; greyscale data that
    was not normalised is ink (strokes = 1) and is drawn dark on white. Series (one-row inputs
    `[C, 1, L]`) are drawn as line plots, one panel each, their channels overlaid.
    """
    ink = all(m == 0.0 for m in mean) and all(v == 1.0 for v in std)
    plt = _pyplot()
    t = task[0]
    ways = t.ways
    sx, sy = t.support_x[0].cpu(), t.support_y[0].cpu()
    qx, qy = t.query_x[0].cpu(), t.query_y[0].cpu()
    shots = int((sy == 0).sum())
    nq = min(max_queries_per_class, int((qy == 0).sum()))
    cols = shots + nq
    series = sx.dim() == 4 and sx.shape[2] == 1  # [n, C, 1, L]: a series per panel
    width = 1.8 if series else 1.1
    fig, axes = plt.subplots(ways, cols, figsize=(width * cols + 0.6, 1.1 * ways + 0.4), squeeze=False)
    for c in range(ways):
        sup = sx[sy == c]
        qidx = torch.nonzero(qy == c).flatten()[:nq]
        for j in range(cols):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < shots:
                img = sup[j]
                color, label = "#1f4e9c", _class_label(c, class_names) if j == 0 else ""
            else:
                i = int(qidx[j - shots])
                img = qx[i]
                label = ""
                color = "#888888"
                if predictions is not None:
                    pred = int(predictions[i])
                    color = "#1a9c3a" if pred == c else "#c62828"
                    label = f"pred {_class_label(pred, class_names)}"
            if series:
                for channel in img[:, 0]:
                    ax.plot(channel.numpy(), linewidth=0.8)
            else:
                ax.imshow(_picture(img, mean, std, ink), cmap="gray", vmin=0, vmax=1)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.5)
            if label:
                ax.set_xlabel(label, fontsize=7)
    axes[0][0].set_title("support", fontsize=8, loc="left")
    if nq:
        axes[0][shots].set_title("queries", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _class_label(label: int, names: Sequence[str] | None, width: int = 14) -> str:
    """A class's name for a plot (cut to `width` characters), or `class LABEL`."""
    if names is None or not 0 <= label < len(names):
        return f"class {label}"
    name = str(names[label])
    name = name if len(name) <= width else name[: width - 1] + "…"
    return name.replace("$", r"\$")  # a folder's name is text, never matplotlib's mathtext


def _picture(img: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], ink: bool) -> object:
    """`[C, H, W]` model input as something `imshow` draws: RGB `[H, W, 3]` or greyscale `[H, W]`."""
    c = img.shape[0]
    m = torch.tensor(mean[:c] if len(mean) >= c else mean * c).view(-1, 1, 1)
    s = torch.tensor(std[:c] if len(std) >= c else std * c).view(-1, 1, 1)
    x = (img * s + m).clamp(0, 1)
    if c == 3:
        return x.permute(1, 2, 0).numpy()
    return (1.0 - x[0] if ink else x[0]).numpy()
