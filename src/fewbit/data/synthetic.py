"""Generated data in a user's layout, for trying fewbit (and testing it) without a data set at hand.

`write_image_folder` writes colour images whose classes differ by colour and texture (stripes of
some angle and frequency, checks or dots, on a tinted ground) in the `folder:` layout;
`write_table` writes a CSV table whose classes differ by where their rows cluster;
`write_series_folder` writes recordings of a 3-axis motion sensor (one `.csv` or `.npy` file per
recording) whose classes are gestures: smooth movements of their own shape. Every image, row or
recording is drawn with the class's own seeded variation (shift, phase, speed, noise), so tasks are
learnable but no two examples are equal.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

TEXTURES = ("stripes", "checks", "dots")


def _class_style(rng: np.random.Generator) -> dict[str, object]:
    return {
        "texture": TEXTURES[int(rng.integers(len(TEXTURES)))],
        "ink": rng.uniform(0.1, 0.9, 3),
        "ground": rng.uniform(0.1, 0.9, 3),
        "angle": rng.uniform(0, math.pi),
        "period": rng.uniform(4.0, 10.0),
    }


def _draw(style: dict[str, object], size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[size, size, 3]` of one image of a class."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = float(style["angle"]) + rng.normal(0, 0.15)  # type: ignore[arg-type]
    period = float(style["period"]) * rng.uniform(0.85, 1.15)  # type: ignore[arg-type]
    phase = rng.uniform(0, 2 * math.pi, 2)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period + phase[0]
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * 2 * math.pi / period + phase[1]
    if style["texture"] == "stripes":
        mask = 0.5 + 0.5 * np.sin(u)
    elif style["texture"] == "checks":
        mask = (np.sign(np.sin(u)) * np.sign(np.sin(v)) + 1) / 2
    else:
        mask = ((np.sin(u) > 0.6) & (np.sin(v) > 0.6)).astype(np.float64)
    ink = np.clip(np.asarray(style["ink"]) + rng.normal(0, 0.05, 3), 0, 1)
    ground = np.clip(np.asarray(style["ground"]) + rng.normal(0, 0.05, 3), 0, 1)
    img = mask[..., None] * ink + (1 - mask[..., None]) * ground
    img += rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_image_folder(
    root: str | Path,
    *,
    classes: int = 20,
    images_per_class: int = 10,
    size: int = 48,
    groups: int = 0,
    formats: tuple[str, ...] = ("png",),
    seed: int = 0,
) -> Path:
    """Write `root/<class>/<i>.<fmt>` (or `root/<group>/<class>/...` with `groups` > 0); returns `root`.

    Classes are named `class000`, ... (groups `group0`, ...); image i uses `formats[i % len(formats)]`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        style = _class_style(rng)
        folder = root / (f"group{c % groups}" if groups else "") / f"class{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            fmt = formats[i % len(formats)]
            image = Image.fromarray(_draw(style, size, rng), mode="RGB")
            buf = io.BytesIO()
            image.save(buf, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()), **(
                {"quality": 95} if fmt in ("jpg", "jpeg") else {"compress_level": 1} if fmt == "png" else {}))
            (folder / f"{i:03d}.{fmt}").write_bytes(buf.getvalue())
    return root


def write_table(
    path: str | Path,
    *,
    classes: int = 12,
    rows_per_class: int = 20,
    features: int = 8,
    spread: float = 0.6,
    seed: int = 0,
    label_column: str = "label",
) -> Path:
    """Write a CSV table `f0..f{features-1},label` whose classes are Gaussian clusters; returns `path`."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, features)) * np.linspace(1, 10, features)  # features of mixed scales
    scale = np.linspace(1, 10, features)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{j}" for j in range(features)] + [label_column])
        for c in range(classes):
            for _ in range(rows_per_class):
                row = centres[c] + rng.normal(0, spread, features) * scale
                writer.writerow([f"{v:.5g}" for v in row] + [f"kind{c:02d}"])
    return path


def write_series_folder(
    folder: str | Path,
    *,
    classes: int = 20,
    per_class: int = 10,
    channels: int = 3,
    lengths: tuple[int, int] = (80, 160),
    seed: int = 0,
) -> Path:
    """Write `folder/<gesture>/<n>.csv|.npy`: recordings of `channels` sensor axes (rows = time steps,
    columns = axes, a header of axis names in the CSVs), `lengths` steps long; returns `folder`.

    A gesture is 2-4 smooth strokes (Gaussian velocity bumps) on each axis, at its own times,
    widths and signs; each recording plays it at its own speed and start, with sensor noise.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        strokes = [(rng.uniform(0.15, 0.85), rng.uniform(0.04, 0.15), rng.normal(0, 1), a)
                   for a in range(channels) for _ in range(rng.integers(2, 5))]
        out = folder / f"gesture{c:02d}"
        out.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            length = int(rng.integers(lengths[0], lengths[1] + 1))
            u = np.linspace(0, 1, length)
            warp = u + rng.uniform(-0.05, 0.05) + 0.05 * np.sin(2 * np.pi * u) * rng.normal()
            x = np.zeros((length, channels))
            for centre, width, amp, axis in strokes:
                x[:, axis] += amp * np.exp(-0.5 * ((warp - centre) / width) ** 2)
            x += rng.normal(0, 0.08, x.shape) + rng.normal(0, 0.2, (1, channels))  # noise, sensor offset
            if i % 3 == 2:
                np.save(out / f"{i:03d}.npy", x.astype(np.float32))
            else:
                np.savetxt(out / f"{i:03d}.csv", x, delimiter=",", fmt="%.5f",
                           header=",".join("xyzuvw"[a] if a < 6 else f"a{a}" for a in range(channels)), comments="")
    return folder
