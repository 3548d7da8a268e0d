"""The "signals" family: few-shot time series generated procedurally, with no download (what glyphs is for images).

A class is a recipe: a few components, each a shape in normalised time u in [0, 1] (a sine, soft
square, sawtooth or triangle wave, a Gaussian bump, a step, a chirp, a burst of fast oscillation,
a train of spikes, a damped ringing, a rectangular pulse, a trend, or coloured noise of a given
spectrum), mixed into the channels the class uses with weights of its own. What tells UCR's classes
apart is there: shape, local motifs and where they sit, frequency content, trends, bursts, texture.

Classes come in families (the groups, as glyphs' alphabets): a family draws a base recipe and the
number of channels its classes use (1 to 3); each of its `FAMILY_SIZE` classes mutates that recipe
(moves motifs, changes frequencies, widths and amplitudes, swaps or adds a component). Tasks within
one family are therefore fine-grained, tasks across families coarse. Splitting by family keeps the
splits class-disjoint and family-disjoint.

Every generated set has one channel count (`channels`, default 3: a batch of tasks needs one); a
class that uses fewer channels leaves the others as low white noise (std `IDLE_NOISE`; under a
per-series zscore they become unit noise that carries no class information, like an idle sensor axis).

Each sample of a class varies: a smooth monotone time warp, a time shift, amplitude scaling and
frequency, position and width jitter per component, a random phase for free-running oscillations
(class recipes say which components are phase-locked to the window), gain, offset and white noise.

Deterministic: class i of a set depends only on (seed, i, channels), and its samples also on
`per_class` and `length`; generating more classes leaves the first ones as they were. The default
set (600 classes of 20 samples, 3 x 128) takes about a second and is kept in memory for reuse.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from fewbit.data.series_files import MAX_SERIES_COUNT, MAX_TOTAL_VALUES, SeriesCollection
from fewbit.errors import DataError
from fewbit.runtime.series import MAX_SERIES_CHANNELS, MAX_SERIES_LENGTH

NAME = "signals"
VERSION = "signals-1"  # bump when a recipe or the sampling changes
DEFAULT_CLASSES = 600
DEFAULT_PER_CLASS = 20
DEFAULT_LENGTH = 128
DEFAULT_CHANNELS = 3
FAMILY_SIZE = 10  # classes per family (group)
MIN_LENGTH = 16
MAX_CLASSES = 100_000
MAX_CHANNELS_USED = 3  # a class draws on at most this many channels
IDLE_NOISE = 0.05  # white noise on the channels a class does not use
KINDS = ("sine", "square", "sawtooth", "triangle", "bump", "step", "chirp", "burst", "spikes", "damped", "pulse",
         "trend", "texture")
_PERIODIC = ("sine", "square", "sawtooth", "triangle", "chirp")
_LOCAL = ("bump", "step", "burst", "spikes", "damped", "pulse")
# How often a kind is drawn: local motifs and waves most, trends and textures as accents.
_KIND_WEIGHTS = np.array([3, 1.5, 1.5, 1, 3, 2, 1.5, 2, 1.5, 1.5, 1.5, 1, 1], np.float64)


@dataclasses.dataclass(frozen=True)
class Component:
    """One shape of a recipe; `mix[c]` is its weight in channel c (0 where the class does not use c)."""

    kind: str
    amp: float
    freq: float = 0.0  # cycles over the window (periodic, chirp start, burst, damped)
    freq_end: float = 0.0  # chirp: cycles/window at the end
    phase: float = 0.0
    locked: bool = True  # periodic only: False draws a new phase per sample
    pos: float = 0.5  # centre, onset or step position in [0, 1]
    width: float = 0.05  # bump, burst, pulse width; step and square softness; damped decay time
    count: int = 1  # spikes: how many
    spacing: float = 0.1  # spikes: distance between spikes
    shape: float = 0.0  # square: duty offset; trend: curvature; texture: AR(1) coefficient
    mix: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A class: its components, noise level and the channels it uses."""

    components: tuple[Component, ...]
    noise: float
    used: tuple[int, ...]


# --------------------------------------------------------------------------------------------- recipes


def _component(rng: np.random.Generator, used: tuple[int, ...], channels: int, kind: str | None = None) -> Component:
    kind = kind or str(rng.choice(KINDS, p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))
    mix = np.zeros(channels)
    mix[list(used)] = rng.uniform(0.3, 1.0, len(used)) * rng.choice([-1.0, 1.0], len(used))
    if len(used) > 1 and rng.random() < 0.35:  # some components live in one channel only
        keep = int(rng.choice(used))
        mix[[c for c in used if c != keep]] = 0.0
    amp = float(np.exp(rng.uniform(np.log(0.4), np.log(1.5))))
    common = {"kind": kind, "amp": amp, "mix": tuple(float(m) for m in mix), "phase": float(rng.uniform(0, 2 * np.pi))}
    if kind in ("sine", "square", "sawtooth", "triangle"):
        return Component(**common, freq=float(np.exp(rng.uniform(np.log(1.0), np.log(12.0)))),
                         locked=bool(rng.random() < 0.5), width=float(rng.uniform(0.1, 0.6)),
                         shape=float(rng.uniform(-0.5, 0.5)))
    if kind == "chirp":
        f0, f1 = np.exp(rng.uniform(np.log(1.0), np.log(12.0), 2))
        return Component(**common, freq=float(f0), freq_end=float(f1), locked=bool(rng.random() < 0.6))
    if kind == "bump":
        return Component(**common, pos=float(rng.uniform(0.1, 0.9)), width=float(np.exp(rng.uniform(np.log(0.02),
                                                                                                        np.log(0.15)))))
    if kind == "step":
        return Component(**common, pos=float(rng.uniform(0.15, 0.85)), width=float(rng.uniform(0.003, 0.04)))
    if kind == "burst":
        return Component(**common, pos=float(rng.uniform(0.15, 0.85)), width=float(rng.uniform(0.03, 0.12)),
                         freq=float(rng.uniform(8.0, 30.0)))
    if kind == "spikes":
        count = int(rng.integers(1, 5))
        spacing = float(rng.uniform(0.04, 0.2))
        return Component(**common, pos=float(rng.uniform(0.1, 0.9 - (count - 1) * spacing * 0.5)), count=count,
                         spacing=spacing, width=float(rng.uniform(0.004, 0.012)))
    if kind == "damped":
        return Component(**common, pos=float(rng.uniform(0.1, 0.7)), width=float(rng.uniform(0.03, 0.25)),
                         freq=float(rng.uniform(4.0, 25.0)))
    if kind == "pulse":
        return Component(**common, pos=float(rng.uniform(0.15, 0.85)), width=float(rng.uniform(0.05, 0.35)))
    if kind == "trend":
        return Component(**common, shape=float(rng.uniform(-2.0, 2.0)))
    return Component(**common, shape=float(rng.choice([0.0, 0.5, 0.8, 0.95, 0.99])))  # texture


def _mutate(rng: np.random.Generator, c: Component, strength: float) -> Component:
    """A clearly different variant of `c` (class-level change, larger than any per-sample jitter)."""

    def signed(low: float, high: float) -> float:
        return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))

    changes: dict[str, Any] = {"amp": c.amp * float(np.exp(signed(0.1, 0.4) * strength))}
    if c.kind in _PERIODIC:
        changes["freq"] = float(np.clip(c.freq * np.exp(signed(0.2, 0.6) * strength), 0.5, 24.0))
        if c.kind == "chirp":
            changes["freq_end"] = float(np.clip(c.freq_end * np.exp(signed(0.2, 0.6) * strength), 0.5, 24.0))
        if c.locked:
            changes["phase"] = c.phase + signed(0.8, 2.5) * strength
        changes["shape"] = float(np.clip(c.shape + signed(0.1, 0.4) * strength, -0.7, 0.7))
    if c.kind in _LOCAL:
        changes["pos"] = float(np.clip(c.pos + signed(0.08, 0.3) * strength, 0.05, 0.95))
        changes["width"] = c.width * float(np.exp(signed(0.2, 0.6) * strength))
        if c.kind in ("burst", "damped"):
            changes["freq"] = float(np.clip(c.freq * np.exp(signed(0.2, 0.5) * strength), 3.0, 35.0))
        if c.kind == "spikes" and rng.random() < 0.5:
            changes["count"] = int(np.clip(c.count + rng.choice([-1, 1]), 1, 5))
    if c.kind == "trend":
        changes["shape"] = c.shape + signed(0.8, 2.0) * strength
    if c.kind == "texture":
        changes["shape"] = float(rng.choice([r for r in (0.0, 0.5, 0.8, 0.95, 0.99) if r != c.shape]))
    mix = np.array(c.mix)
    on = np.flatnonzero(mix)
    mix[on] *= np.exp(rng.normal(0.0, 0.3 * strength, on.size))
    changes["mix"] = tuple(float(m) for m in mix)
    return dataclasses.replace(c, **changes)


def family_recipe(family: int, *, seed: int = 0, channels: int = DEFAULT_CHANNELS) -> Recipe:
    """The base recipe of family `family` (its classes mutate it)."""
    rng = np.random.default_rng([seed, 0, family, channels])
    k = int(rng.integers(1, min(MAX_CHANNELS_USED, channels) + 1))
    used = tuple(sorted(int(c) for c in rng.choice(channels, k, replace=False)))
    parts = [_component(rng, used, channels) for _ in range(int(rng.integers(2, 5)))]
    if not any(p.kind not in ("trend", "texture") for p in parts):
        parts.append(_component(rng, used, channels, "bump"))
    return Recipe(tuple(parts), float(np.exp(rng.uniform(np.log(0.03), np.log(0.3)))), used)


def class_recipe(index: int, *, seed: int = 0, channels: int = DEFAULT_CHANNELS) -> Recipe:
    """The recipe of class `index`: its family's base recipe (family `index // FAMILY_SIZE`), mutated."""
    base = family_recipe(index // FAMILY_SIZE, seed=seed, channels=channels)
    rng = np.random.default_rng([seed, 1, index, channels])
    parts = [_mutate(rng, c, 1.0) if rng.random() < 0.7 else c for c in base.components]
    if rng.random() < 0.4:  # swap one component for a new one
        parts[int(rng.integers(len(parts)))] = _component(rng, base.used, channels)
    if rng.random() < 0.4 or all(p is q for p, q in zip(parts, base.components)):
        parts.append(_component(rng, base.used, channels))
    noise = base.noise * float(np.exp(rng.normal(0.0, 0.3)))
    return Recipe(tuple(parts), noise, base.used)


# -------------------------------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, n: int, length: int, rho: float) -> np.ndarray:
    """`[n, length]` unit-variance AR(1)-coloured noise with coefficient `rho` (filtered in the frequency domain)."""
    white = rng.normal(size=(n, length))
    if rho == 0.0:
        return white
    omega = np.linspace(0.0, np.pi, length // 2 + 1)
    gain = 1.0 / np.abs(1.0 - rho * np.exp(-1j * omega))
    out = np.fft.irfft(np.fft.rfft(white, axis=1) * gain, n=length, axis=1)
    return out / np.maximum(out.std(axis=1, keepdims=True), 1e-12)


def _render(c: Component, u: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    """`[n, length]` values of component `c` at warped times `u` (`[n, length]`), with per-sample jitter."""
    n = u.shape[0]
    amp = c.amp * np.exp(rng.normal(0.0, 0.15, (n, 1)))
    nyquist = length / 5.0  # at least 5 samples a cycle, whatever the length
    freq = np.minimum(c.freq * np.exp(rng.normal(0.0, 0.03, (n, 1))), nyquist)
    phase = c.phase if c.locked else rng.uniform(0.0, 2 * np.pi, (n, 1))
    pos = c.pos + rng.normal(0.0, 0.015, (n, 1))
    width = c.width * np.exp(rng.normal(0.0, 0.1, (n, 1)))
    theta = 2 * np.pi * freq * u + phase
    if c.kind == "sine":
        y = np.sin(theta)
    elif c.kind == "square":
        y = np.tanh((np.sin(theta) - c.shape) / (0.05 + 0.2 * c.width))
    elif c.kind == "sawtooth":
        y = 2.0 * ((theta / (2 * np.pi)) % 1.0) - 1.0
    elif c.kind == "triangle":
        y = 2.0 * np.abs(2.0 * ((theta / (2 * np.pi)) % 1.0) - 1.0) - 1.0
    elif c.kind == "chirp":
        f1 = np.minimum(c.freq_end * np.exp(rng.normal(0.0, 0.03, (n, 1))), nyquist)
        y = np.sin(2 * np.pi * (freq * u + (f1 - freq) * u * u / 2) + phase)
    elif c.kind == "bump":
        y = np.exp(-0.5 * ((u - pos) / width) ** 2)
    elif c.kind == "step":
        y = 0.5 * (1.0 + np.tanh((u - pos) / width))
    elif c.kind == "burst":
        y = np.exp(-0.5 * ((u - pos) / width) ** 2) * np.sin(2 * np.pi * freq * (u - pos) + phase)
    elif c.kind == "spikes":
        y = sum(np.exp(-0.5 * ((u - pos - k * c.spacing) / width) ** 2) for k in range(c.count))
    elif c.kind == "damped":
        after = np.maximum(u - pos, 0.0)
        y = np.where(u >= pos, np.exp(-after / width) * np.sin(2 * np.pi * freq * after), 0.0)
    elif c.kind == "pulse":
        edge = 0.01
        y = 0.5 * (np.tanh((u - (pos - width / 2)) / edge) - np.tanh((u - (pos + width / 2)) / edge))
    elif c.kind == "trend":
        slope = np.exp(rng.normal(0.0, 0.15, (n, 1)))
        y = slope * (u - 0.5) * 2.0 + c.shape * ((u - 0.5) * 2.0) ** 2
    else:  # texture: noise of the recipe's colour, new every sample, at half strength (it carries no motif)
        y = 0.5 * _smooth_noise(rng, n, length, c.shape)
    return amp * y


def draw_class(recipe: Recipe, *, per_class: int, length: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """float32 `[per_class, channels, length]` samples of one class."""
    n = per_class
    t = np.linspace(0.0, 1.0, length)[None, :]
    # A smooth monotone warp: derivative 1 + sum_k a_k cos(pi k t) > 0 since sum |a_k| < 1.
    a = np.clip(rng.normal(0.0, 0.05, (n, 2, 1)), -0.12, 0.12)
    warp = t + a[:, 0] * np.sin(np.pi * t) / np.pi + a[:, 1] * np.sin(2 * np.pi * t) / (2 * np.pi)
    u = warp + np.clip(rng.normal(0.0, 0.02, (n, 1)), -0.06, 0.06)
    out = np.zeros((n, channels, length))
    for c in recipe.components:
        mix = np.asarray(c.mix)
        if not mix.any():
            continue
        out += mix[None, :, None] * _render(c, u, rng, length)[:, None, :]
    noise = np.full(channels, IDLE_NOISE)
    noise[list(recipe.used)] = recipe.noise
    out *= np.exp(rng.normal(0.0, 0.1, (n, channels, 1)))  # gain
    out += rng.normal(0.0, 0.1, (n, channels, 1))  # offset
    out += noise[None, :, None] * np.exp(rng.normal(0.0, 0.2, (n, channels, 1))) * rng.normal(size=out.shape)
    return out.astype(np.float32)


def _check(classes: Any, per_class: Any, length: Any, channels: Any, seed: Any) -> None:
    for field, value, low, high in (("classes", classes, 1, MAX_CLASSES), ("per_class", per_class, 1, 10_000),
                                    ("length", length, MIN_LENGTH, MAX_SERIES_LENGTH),
                                    ("channels", channels, 1, MAX_SERIES_CHANNELS), ("seed", seed, 0, 2**63 - 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise DataError(f"{NAME}: {field} must be a whole number {low}..{high}, got {value!r}")
    if classes * per_class > MAX_SERIES_COUNT or classes * per_class * channels * length > MAX_TOTAL_VALUES:
        raise DataError(f"{NAME}: {classes} classes x {per_class} samples x {channels} x {length} is more than the "
                        f"{MAX_SERIES_COUNT:,} series or {MAX_TOTAL_VALUES:,} values fewbit holds")


@functools.lru_cache(maxsize=4)
def _arrays(classes: int, per_class: int, length: int, channels: int, seed: int) -> np.ndarray:
    values = np.empty((classes, per_class, channels, length), np.float32)
    for i in range(classes):
        recipe = class_recipe(i, seed=seed, channels=channels)
        rng = np.random.default_rng([seed, 2, i, channels])
        values[i] = draw_class(recipe, per_class=per_class, length=length, channels=channels, rng=rng)
    values.setflags(write=False)  # shared by every caller through the cache
    return values


def class_name(index: int) -> str:
    """`family012/signal3`: the family (group) and the class within it."""
    return f"{family_name(index // FAMILY_SIZE)}/signal{index % FAMILY_SIZE}"


def family_name(family: int) -> str:
    return f"family{family:03d}"


def generate_signals(
    *, classes: int = DEFAULT_CLASSES, per_class: int = DEFAULT_PER_CLASS, length: int = DEFAULT_LENGTH,
    channels: int | None = None, seed: int = 0,
) -> SeriesCollection:
    """`classes` classes of `per_class` series each, float32 `[channels, length]` (raw: normalise with
    `SeriesPreprocessing`), grouped by family (`groups`), labels `class_name(i)`.

        data = generate_signals(classes=600, per_class=20, length=128)   # about a second; cached
        x = SeriesPreprocessing(channels=data.channels, length=128).prepare(data.series)

    `channels` None means `DEFAULT_CHANNELS` (3): every generated set has one channel count, and a
    class using fewer channels leaves the others as low noise (module docstring).
    """
    channels = DEFAULT_CHANNELS if channels is None else channels
    _check(classes, per_class, length, channels, seed)
    values = _arrays(int(classes), int(per_class), int(length), int(channels), int(seed))
    series = list(values.reshape(classes * per_class, channels, length))
    labels = [class_name(i) for i in range(classes) for _ in range(per_class)]
    groups = [family_name(i // FAMILY_SIZE) for i in range(classes) for _ in range(per_class)]
    notes = {"layout": f"generated ({VERSION}: {-(-classes // FAMILY_SIZE)} families of up to {FAMILY_SIZE} classes)",
             "format": NAME, "seed": seed, "series": len(series), "classes": classes, "channels": channels,
             "length_min": length, "length_max": length, "classes_with_one_series": classes if per_class == 1 else 0}
    return SeriesCollection(series, labels, groups=groups, notes=notes)
