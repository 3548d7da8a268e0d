"""Seeded augmentation: reproducible from the generator, a real change, bounded values, off at evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewbit.data.augment import augment, resolve
from fewbit.data.episodes import EpisodeSampler
from fewbit.evaluation import eval_tasks
from tests.data.synthetic import synthetic_dataset


def _batch(channels: int) -> torch.Tensor:
    return torch.rand(6, channels, 20, 20, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("recipe", "channels"), [("photo", 3), ("glyph", 1), ("photo", 1), ("ink", 1)])
def test_same_generator_same_result_other_seed_other_result(recipe: str, channels: int) -> None:
    x = _batch(channels)
    a = augment(x, recipe, torch.Generator().manual_seed(5))
    b = augment(x, recipe, torch.Generator().manual_seed(5))
    c = augment(x, recipe, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and (a - x).abs().mean() > 0.01
    assert a.min() >= 0 and a.max() <= 1


def test_glyph_warps_keep_most_of_the_ink() -> None:
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # a square stroke in the middle
    y = augment(x, "glyph", torch.Generator().manual_seed(0))
    kept = y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((kept > 0.7) & (kept < 1.3)).all()  # small affine maps: no stroke leaves the frame


def test_ink_bends_strokes_and_thickens_some() -> None:
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 13:15, 4:24] = 1.0  # a straight horizontal stroke
    g_ink, g_glyph = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ink, glyph = augment(x, "ink", g_ink), augment(x, "glyph", g_glyph)
    assert not torch.equal(ink, glyph)
    kept = ink.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert (kept > 0.6).all()  # no stroke leaves the frame
    # thickened images hold clearly more ink than the affine warp alone leaves; about INK_THICKEN of them
    thicker = (ink.sum(dim=(1, 2, 3)) > 1.3 * glyph.sum(dim=(1, 2, 3))).float().mean()
    assert 0.15 < thicker < 0.45


def test_resolve() -> None:
    assert resolve("auto", 3) == "photo" and resolve("auto", 1) == "glyph" and resolve("auto", None) == "none"
    assert resolve("none", 3) == "none"
    with pytest.raises(ValueError, match="augment must be one of"):
        resolve("mixup", 3)


def test_sampler_augments_reproducibly_and_evaluation_never_does() -> None:
    ds = synthetic_dataset()
    plain = EpisodeSampler(ds, ways=3, shots=1, queries=2, generator=torch.Generator().manual_seed(0)).sample(2)
    warped = [
        EpisodeSampler(ds, ways=3, shots=1, queries=2, augment="glyph",
                       generator=torch.Generator().manual_seed(0)).sample(2) for _ in range(2)
    ]
    assert torch.equal(warped[0].support_x, warped[1].support_x)
    assert torch.equal(warped[0].support_y, plain.support_y)  # the same classes and labels were drawn
    assert not torch.equal(warped[0].support_x, plain.support_x)
    task = next(eval_tasks(ds, ways=3, shots=1, queries=2, tasks=2, seed=0))
    assert torch.equal(task.support_x, plain.support_x)


def test_within_group_tasks_draw_from_one_group() -> None:
    ds = synthetic_dataset(alphabets=4, classes_per_alphabet=6)
    sampler = EpisodeSampler(ds, ways=5, shots=1, queries=1, within_group=True,
                             generator=torch.Generator().manual_seed(0))
    for _ in range(10):
        task = sampler.sample(1)
        groups = set()
        for i in range(5):
            row = task.support_x[0, i, 0].numpy()
            match = [c for c in range(ds.num_classes) if any(
                np.array_equal(row, ds.images[j, 0] / 255.0) for j in np.flatnonzero(ds.labels == c))]
            groups |= {ds.class_alphabet[c] for c in match}
        assert len(groups) == 1
