"""Seeded image augmentation for meta-training (never at evaluation).

Every random number is drawn from the sampler's explicit `torch.Generator`, whose state is in
every checkpoint, so a resumed run augments exactly as an uninterrupted one. Every recipe is one
warp per image (`affine_grid` + `grid_sample`), plus colour jitter for photographs:

- `photo` (colour images): random resized crop (a share `CROP_AREA` of the area, aspect ratio in
  `CROP_RATIO`), horizontal flip, brightness / contrast / saturation jitter of +-`JITTER`.
- `glyph` (strokes, greyscale): small rotation, scale, shear and shift (`GLYPH_*`).
- `ink` (handwriting): `glyph`'s warp plus an elastic distortion (a smooth random displacement of
  up to `INK_ELASTIC` of the side, as for handwritten digits in Simard et al. 2003) and thicker
  strokes on a share `INK_THICKEN` of the images (a 3x3 max of the strokes at `INK_HALO` strength).
- `auto`: `photo` for colour data, `glyph` for greyscale; `none`: off.
- `series` (signals, `[C, 1, L]` one-row images; `auto` there): a random window of `SERIES_WINDOW`
  of the series, time-warped by a smooth monotone curve (`SERIES_TIME_WARP`), stretched back to
  the length; then a smooth magnitude warp (`SERIES_MAGNITUDE_WARP`), a scaling per channel
  (`SERIES_SCALE`) and Gaussian jitter (`SERIES_JITTER`) (Um et al. 2017; Iwana & Uchida 2021).

Image augmentation works on [0, 1] pixel values, before normalisation; series augmentation on the
prepared (normalised) series.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "auto", "photo", "glyph", "ink", "series")
CROP_AREA = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
FLIP = 0.5
JITTER = 0.4
GLYPH_ROTATION = math.radians(10)
GLYPH_SCALE = (0.9, 1.1)
GLYPH_SHEAR = 0.1
GLYPH_SHIFT = 0.07  # of the image side
INK_ELASTIC = 1.5 / 28  # the coarse field's largest displacement, of the image side (1.5 pixels at 28 x 28)
INK_FIELD = 5  # the displacement field is drawn on a 5 x 5 grid, then smoothly upsampled
INK_THICKEN = 0.3
INK_HALO = 0.6
SERIES_WINDOW = (0.8, 1.0)  # the share of the series a window keeps
SERIES_TIME_WARP = 0.25  # std of the local speed of the time warp (knots' speeds ~ N(1, this), clipped)
SERIES_MAGNITUDE_WARP = 0.15  # std of the smooth magnitude curve (~ N(1, this) at its knots)
SERIES_SCALE = 0.1  # std of each channel's scale factor (~ N(1, this))
SERIES_JITTER = 0.03  # std of the added noise, in normalised units
SERIES_KNOTS = 4  # knots of the warping curves, smoothly interpolated over the series


def resolve(recipe: str, channels: int | None) -> str:
    """The recipe `auto` stands for on data with `channels` (None for tables: none)."""
    if recipe not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {recipe!r}")
    if recipe == "series":
        raise ValueError("series augments series; images take photo, glyph, ink, auto or none")
    if channels is None:
        return "none"
    if recipe == "auto":
        return "photo" if channels == 3 else "glyph"
    return recipe


def augment(x: torch.Tensor, recipe: str, generator: torch.Generator) -> torch.Tensor:
    """`x [m, C, H, W]` in [0, 1], augmented by `recipe` (photo, glyph or none) with `generator`."""
    if recipe == "none" or x.shape[0] == 0:
        return x
    m = x.shape[0]
    if recipe == "photo":
        theta = _crop_flip(m, generator)
    elif recipe in ("glyph", "ink"):
        theta = _small_affine(m, generator)
    else:
        raise ValueError(f"unknown augmentation {recipe!r}")
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if recipe == "ink":
        grid = grid + _elastic(x.shape, generator)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if recipe == "photo":
        x = _jitter(x, generator)
    elif recipe == "ink":
        thicker = (torch.rand(m, generator=generator) < INK_THICKEN).view(-1, 1, 1, 1)
        x = torch.where(thicker, torch.maximum(x, INK_HALO * F.max_pool2d(x, 3, stride=1, padding=1)), x)
    return x


def _elastic(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """`[m, H, W, 2]` smooth random displacements (grid units: the side is 2) of up to about `INK_ELASTIC`
    of the side (bicubic upsampling may overshoot the coarse values slightly)."""
    m, _, h, w = shape
    coarse = torch.rand(m, 2, INK_FIELD, INK_FIELD, generator=g) * 2 - 1
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return field * (2 * INK_ELASTIC)


def _uniform(m: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(m, generator=g) * (high - low) + low


def _crop_flip(m: int, g: torch.Generator) -> torch.Tensor:
    """theta `[m, 2, 3]` of a random resized crop (zoom in only, so no padding) and a flip."""
    area = _uniform(m, *CROP_AREA, g)
    log_ratio = _uniform(m, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), g)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(m, generator=g) * 2 - 1) * (1 - sx)
    cy = (torch.rand(m, generator=g) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(m, generator=g) < FLIP, -1.0, 1.0)
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = sx * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    return theta


def _small_affine(m: int, g: torch.Generator) -> torch.Tensor:
    """theta `[m, 2, 3]` of a small rotation, scale, shear and shift (strokes stay inside the frame)."""
    angle = _uniform(m, -GLYPH_ROTATION, GLYPH_ROTATION, g)
    scale = 1.0 / _uniform(m, *GLYPH_SCALE, g)  # theta maps output to input: invert the zoom
    shear = _uniform(m, -GLYPH_SHEAR, GLYPH_SHEAR, g)
    shift = (torch.rand(m, 2, generator=g) * 2 - 1) * (2 * GLYPH_SHIFT)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = scale * cos
    theta[:, 0, 1] = scale * (-sin + shear * cos)
    theta[:, 1, 0] = scale * sin
    theta[:, 1, 1] = scale * (cos + shear * sin)
    theta[:, :, 2] = shift
    return theta


def _jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and (for RGB) saturation, each scaled by a factor in 1 +- JITTER."""
    m, c = x.shape[0], x.shape[1]
    factors = 1 + (torch.rand(m, 3, generator=g) * 2 - 1) * JITTER
    view = (m, 1, 1, 1)
    x = x * factors[:, 0].view(view)
    grey = _grey(x)
    x = (x - grey.mean(dim=(1, 2, 3), keepdim=True)) * factors[:, 1].view(view) + grey.mean(
        dim=(1, 2, 3), keepdim=True
    )
    if c == 3:
        grey = _grey(x)
        x = grey + (x - grey) * factors[:, 2].view(view)
    return x.clamp_(0.0, 1.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def augment_series(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`x [m, C, 1, L]` (prepared series) warped in time and magnitude, scaled and jittered with `generator`."""
    m, c, _, length = x.shape
    if m == 0 or length < 2:
        return x
    width = _uniform(m, *SERIES_WINDOW, generator)  # [m]
    start = torch.rand(m, generator=generator) * (1 - width)
    speed = (1 + SERIES_TIME_WARP * torch.randn(m, SERIES_KNOTS, generator=generator)).clamp(0.5, 1.5)
    speed = F.interpolate(speed[:, None], size=length, mode="linear", align_corners=True)[:, 0]  # [m, L]
    warp = torch.cumsum(speed, dim=1)
    warp = (warp - warp[:, :1]) / (warp[:, -1:] - warp[:, :1])  # monotone 0..1
    where = (start[:, None] + width[:, None] * warp) * 2 - 1  # [-1, 1] over the series
    grid = torch.stack([where, torch.zeros_like(where)], dim=-1)[:, None]  # [m, 1, L, 2]
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    curve = 1 + SERIES_MAGNITUDE_WARP * torch.randn(m, c, SERIES_KNOTS, generator=generator)
    curve = F.interpolate(curve, size=length, mode="linear", align_corners=True)[:, :, None]  # [m, C, 1, L]
    scale = 1 + SERIES_SCALE * torch.randn(m, c, 1, 1, generator=generator)
    noise = SERIES_JITTER * torch.randn(x.shape, generator=generator)
    return x * curve * scale + noise
