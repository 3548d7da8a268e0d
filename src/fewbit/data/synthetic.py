"""Generated data in a user's layout, for trying fewbit (and testing it) without a data set at hand.

`write_image_folder` writes colour images whose classes differ by colour and texture (stripes of
some angle and frequency, checks or dots, on a tinted ground) in the `folder:` layout;
`write_photo_folder` writes photo-like scenes (an object of some shape, texture and palette at a
random place, scale and turn, among clutter, in images of odd sizes and formats) in the same layout;
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
PHOTO_TEXTURES = ("stripes", "checks", "dots", "waves", "grid", "rings", "solid")
PHOTO_SHAPES = ("disc", "square", "triangle", "star", "cross", "hexagon")
PHOTO_PALETTES = (  # (ink, ground) of an object, RGB 0..1
    ((0.85, 0.15, 0.10), (0.95, 0.85, 0.20)), ((0.10, 0.30, 0.80), (0.85, 0.90, 0.95)),
    ((0.10, 0.55, 0.20), (0.60, 0.35, 0.15)), ((0.55, 0.10, 0.60), (0.95, 0.60, 0.75)),
    ((0.05, 0.05, 0.05), (0.95, 0.55, 0.05)), ((0.00, 0.60, 0.60), (0.95, 0.95, 0.90)),
    ((0.70, 0.70, 0.70), (0.20, 0.20, 0.35)), ((0.95, 0.45, 0.45), (0.30, 0.10, 0.10)),
)


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


def _photo_texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """float `[size, size]` in [0, 1]: where a texture puts its ink (a random turn, scale and phase)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle, period = rng.uniform(0, math.pi), size / rng.uniform(4.0, 7.0)
    phase = rng.uniform(0, 2 * math.pi, 2)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period + phase[0]
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) * 2 * math.pi / period + phase[1]
    if texture == "stripes":
        return (np.sin(u) > 0).astype(np.float64)
    if texture == "checks":
        return (np.sign(np.sin(u)) * np.sign(np.sin(v)) + 1) / 2
    if texture == "dots":
        return ((np.sin(u) > 0.5) & (np.sin(v) > 0.5)).astype(np.float64)
    if texture == "waves":
        return (np.sin(u + 2.0 * np.sin(v / 2)) > 0).astype(np.float64)
    if texture == "grid":
        return ((np.sin(u) > 0.8) | (np.sin(v) > 0.8)).astype(np.float64)
    if texture == "rings":
        r = np.hypot(xx - size / 2, yy - size / 2) * 2 * math.pi / period
        return (np.sin(r + phase[0]) > 0).astype(np.float64)
    return np.ones((size, size))  # solid: the ink alone


def _shape_mask(shape: str, size: int, turn: float) -> np.ndarray:
    """bool `[size, size]`: `shape` filling most of a square canvas, turned by `turn` degrees."""
    from PIL import ImageDraw

    big = 4 * size  # drawn large and reduced: smooth edges
    im = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(im)
    c, r = big / 2, big * 0.45
    if shape == "disc":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle([c - w, c - r, c + w, c + r], fill=255)
        draw.rectangle([c - r, c - w, c + r, c + w], fill=255)
    else:
        corners = {"square": 4, "triangle": 3, "hexagon": 6, "star": 10}[shape]
        points = []
        for k in range(corners):
            a = 2 * math.pi * k / corners - math.pi / 2
            radius = r * (0.45 if shape == "star" and k % 2 else 1.0)
            points.append((c + radius * math.cos(a), c + radius * math.sin(a)))
        draw.polygon(points, fill=255)
    im = im.rotate(turn, resample=Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im) > 127


def _photo(texture: str, shape: str, palette: int, rng: np.random.Generator,
           sizes: tuple[int, int]) -> Image.Image:
    """One scene: a cluttered, shaded ground of some size, the class's object on it somewhere."""
    width, height = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)  # a shaded ground from one corner to another
    t = (xx / width * rng.uniform(-1, 1) + yy / height * rng.uniform(-1, 1) + 1) / 2
    img = a * (1 - t[..., None]) + b * t[..., None]
    for _ in range(int(rng.integers(3, 9))):  # clutter: blobs and bars of random colours
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(3, 0.25 * width), rng.uniform(3, 0.25 * height)
        blob = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[blob] = rng.uniform(0, 1, 3)
    side = int(rng.uniform(0.4, 0.8) * min(width, height))
    mask = _shape_mask(shape, side, rng.uniform(0, 360))
    ink, ground = (np.asarray(v) + rng.normal(0, 0.04, 3) for v in PHOTO_PALETTES[palette])
    pattern = _photo_texture(texture, side, rng)[..., None]
    obj = pattern * ink + (1 - pattern) * ground
    x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    region = img[y0 : y0 + side, x0 : x0 + side]
    region[mask] = obj[mask]
    img *= rng.uniform(0.75, 1.15)  # exposure
    img += rng.normal(0, 0.03, img.shape)  # sensor noise
    return Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), mode="RGB")


def write_photo_folder(
    root: str | Path,
    *,
    classes: int = 35,
    images_per_class: int = 15,
    sizes: tuple[int, int] = (50, 200),
    formats: tuple[str, ...] = ("jpg", "png", "webp"),
    seed: int = 0,
) -> Path:
    """Write `root/<texture>-<shape>-p<palette>/<i>.<fmt>`: photo-like scenes; returns `root`.

    A class is one of the PHOTO_TEXTURES x PHOTO_SHAPES x PHOTO_PALETTES objects (7 x 6 x 8, drawn
    without repeats); each image puts it at a random place, 40-80 % of the shorter side, turned at
    random, on a shaded ground among 3-8 blobs of clutter, in a `sizes` x `sizes` image (width and
    height drawn apart: rarely square), under random exposure and noise; image i is saved as
    `formats[i % len(formats)]` (JPEG quality 90). The classes differ by shape, texture and colour
    together, as things in photos do; position, size, turn, ground and clutter are nuisances.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    combos = len(PHOTO_TEXTURES) * len(PHOTO_SHAPES) * len(PHOTO_PALETTES)
    if not 1 <= classes <= combos:
        raise ValueError(f"classes: must be 1..{combos}, got {classes}")
    for index in rng.permutation(combos)[:classes].tolist():
        texture = PHOTO_TEXTURES[index % len(PHOTO_TEXTURES)]
        shape = PHOTO_SHAPES[index // len(PHOTO_TEXTURES) % len(PHOTO_SHAPES)]
        palette = index // (len(PHOTO_TEXTURES) * len(PHOTO_SHAPES))
        folder = root / f"{texture}-{shape}-p{palette}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            fmt = formats[i % len(formats)]
            image = _photo(texture, shape, palette, rng, sizes)
            buf = io.BytesIO()
            image.save(buf, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()),
                       **({"quality": 90} if fmt in ("jpg", "jpeg", "webp") else {}))
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
