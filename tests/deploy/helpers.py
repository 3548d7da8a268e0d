"""Fixtures shared by the deploy and runtime tests: glyph-like images and compressed models."""

from __future__ import annotations

import numpy as np
import torch

from fewbit.models import build_backbone, conv4, mlp
from fewbit.runtime.series import SeriesPreprocessing


def glyphs(classes: int, per_class: int, *, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 `[classes*per_class, 1, size, size]` stroke-like images in [0, 1] and int64 labels.

    Each class is a fixed random set of strokes; each image shifts it by a pixel and adds noise,
    so classes are separable but images differ.
    """
    rng = np.random.default_rng(seed)
    protos = np.zeros((classes, size, size), np.float32)
    for c in range(classes):
        for _ in range(3):
            r, c0 = rng.integers(3, size - 3, 2)
            horizontal = rng.random() < 0.5
            length = rng.integers(size // 4, size // 2)
            if horizontal:
                protos[c, r, c0 : c0 + length] = 1
            else:
                protos[c, r : r + length, c0] = 1
    xs, ys = [], []
    for c in range(classes):
        for _ in range(per_class):
            shifted = np.roll(protos[c], tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
            xs.append(np.clip(shifted + 0.1 * rng.random((size, size), dtype=np.float32), 0, 1))
            ys.append(c)
    return np.stack(xs)[:, None].astype(np.float32), np.asarray(ys, dtype=np.int64)


def compressed_conv4(spec: str | None, *, ways: int = 5, seed: int = 0, width: int = 64) -> torch.nn.Module:
    """A Conv-4 (28x28, greyscale) compressed with `spec`, activations calibrated on glyphs."""
    from fewbit.compress import calibrate, compress_

    torch.manual_seed(seed)
    model = conv4(ways=ways, width=width)
    if spec:
        compress_(model, spec)
        x, _ = glyphs(10, 4, seed=seed + 100)
        calibrate(model, [torch.from_numpy(x)])
    return model.eval()


def compressed_mlp(spec: str | None, *, ways: int = 5, seed: int = 0) -> torch.nn.Module:
    """An MLP 784-64-32 with a `ways` head, compressed with `spec`."""
    from fewbit.compress import calibrate, compress_

    torch.manual_seed(seed)
    model = mlp(ways=ways, in_features=28 * 28, hidden=(64, 32))
    if spec:
        compress_(model, spec)
        x, _ = glyphs(10, 4, seed=seed + 100)
        calibrate(model, [torch.from_numpy(x)])
    return model.eval()


def series(
    classes: int, per_class: int, *, channels: int = 3, length: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """float32 `[classes*per_class, channels, 1, length]` z-scored series (the model's inputs) and
    int64 labels: each class is two sine waves per channel of its own frequencies and phases, each
    series shifts, scales and adds noise to them (`fewbit.deploy.c_export.mcu.series_task`)."""
    from fewbit.deploy.c_export.mcu import series_task

    pre = SeriesPreprocessing(channels=channels, length=length)
    x, y, _ = series_task(pre, ways=classes, shots=per_class, queries=0, seed=seed)
    return x, y


def series_preprocessing(channels: int = 3, length: int = 128) -> dict:
    """The manifest's preprocessing block of a series model (per-series z-score)."""
    return SeriesPreprocessing(channels=channels, length=length).to_dict()


def compressed_conv1d(
    spec: str | None, *, ways: int = 5, seed: int = 0, width: int = 64, channels: int = 3, length: int = 128
) -> torch.nn.Module:
    """The 1-D Conv-4 (`1 x 3` kernels, `1 x 2` pools) over `channels` x `length` series, compressed
    with `spec` (`slim:` first: a channel prune of the convolutions, slimmed away, then the rest),
    activations calibrated on series."""
    from fewbit.compress import calibrate, compress_, slim

    torch.manual_seed(seed)
    model = build_backbone("conv1d", ways=ways, input_shape=(channels, 1, length), width=width)
    if spec and spec.startswith("slim:"):
        model = slim(compress_(model, "prune:channel:0.5@features.*"))
        spec = spec.removeprefix("slim:")
    if spec:
        compress_(model, spec)
        x, _ = series(10, 4, channels=channels, length=length, seed=seed + 100)
        calibrate(model, [torch.from_numpy(x)])
    return model.eval()


@torch.no_grad()
def fit_head_to_glyphs(
    model: torch.nn.Module, classes: int, *, queries: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Set `model.head` to the prototype classifier of `classes` glyph classes (W = 2c, b = -|c|^2).

    A stand-in for a trained head: its predictions have the margins of a real classifier rather
    than the near-ties of random weights. Returns `queries` fresh queries per class `(x, y)`.
    """
    x, y = glyphs(classes, queries + 2, seed=seed)
    support = np.arange(len(y)) % (queries + 2) < 2
    z = model(torch.from_numpy(x[support]), embed=True)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(y[support]), classes).float()
    protos = onehot.T @ z / onehot.sum(0)[:, None]
    model.head.weight.copy_(2 * protos)
    model.head.bias.copy_(-(protos**2).sum(1))
    return x[~support], y[~support]


def encode_allowing_nan(manifest: dict, tensors: dict) -> bytes:
    """`encode_artifact`, except that NaN and Infinity may be written into the manifest, as a tool
    other than fewbit might (Python's json writes and reads them, JSON itself has no such values)."""
    import json
    from unittest import mock

    import fewbit.artifact.format as fmt

    real = json.dumps
    with mock.patch.object(fmt.json, "dumps", lambda obj, **kw: real(obj, **{**kw, "allow_nan": True})):
        return fmt.encode_artifact(manifest, tensors)
