"""Test-time views: a task seen through the symmetries of the square, its scores averaged.

View k of an image batch `[N, C, H, W]` is a rotation by k x 90 degrees, mirrored left-right
for k >= 4: `views=4` averages the four rotations, `views=8` the whole dihedral group. Each view
is adapted to and scored as a task of its own (support and query turned alike), so every
adaptation method and BatchNorm mode works unchanged; the cost is `views` adaptations. A model
trained with rotations as classes (Omniglot's recipe) sees each view as a new but consistent
task, which is why averaging them helps.

Kept free of torch: the numpy runtime and `fewbit.meta` (which turns torch tensors the same
way) share the definition of a view through `VIEWS` and `check_views`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VIEWS = (1, 4, 8)  # the identity, the four rotations, the dihedral group (rotations and mirrors)


def check_views(views: int, input_shape: Sequence[int]) -> int:
    """`views` when it is one of VIEWS and fits inputs of `input_shape` (square images for 4 or 8)."""
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or int(views) not in VIEWS:
        raise ValueError(f"views must be one of {', '.join(map(str, VIEWS))}, got {views!r}")
    views = int(views)
    if views > 1 and (len(input_shape) != 3 or input_shape[-1] != input_shape[-2]):
        shape = "x".join(map(str, input_shape))
        raise ValueError(f"views={views} turns square images; this model takes inputs of shape {shape} "
                         "(use views=1)")
    return views


def view(x: np.ndarray, k: int) -> np.ndarray:
    """View `k` (0..7) of images `[N, C, H, W]`: rotated by k x 90 degrees, then mirrored for k >= 4."""
    out = np.rot90(x, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)
