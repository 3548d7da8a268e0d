"""The arena: every buffer the C runtime uses, at 8-byte aligned offsets computed at export."""

from __future__ import annotations

from typing import Any

import numpy as np

from fewbit.runtime.model import RuntimeModel
from fewbit.runtime.support_stats import Stage

# Output pixels a sparse layer computes at once (kernels.c, FB_LANES): 16 on a core with vectors
# (the host: one 256-bit add, or two 128-bit ones, per kept weight), 8 on one without (a Cortex-M4).
SPARSE_LANES = 8
SPARSE_LANES_VECTOR = 16
SCHEDULE_TMP_BYTES = 1536  # code counts and cursors while a schedule is built


def arena_layout(
    stages: list[Stage],
    geo: list[dict[str, int]],
    integer: bool,
    byte_products: bool,
    model: RuntimeModel,
    max_ways: int,
    max_support: int,
    head: dict[str, Any] | None,
    cache_bytes: int,
    code_table: bool,
    lanes: int = SPARSE_LANES,
) -> dict[str, Any]:
    """Arena offsets (8-byte aligned) and the total: activations, unpacked weights, statistics, state,
    `cache_bytes` for the support set's activations while statistics are frozen, and with
    `code_table` the first layer's code of each pixel value (an integer body reading pixels)."""
    act = 1 if integer else 4
    w_size = 1 if byte_products else 2 if integer else 4  # an unpacked weight; a patch value likewise
    first = int(np.prod(model.input_shape))
    act_elems = max([first] + [g["cout"] * g["hp"] * g["wp"] for g in geo[:-1]])
    dim = model.embedding_dim
    dense = [g for g in geo if not g.get("sparse")] or [{"group": 0, "fan": 0}]
    sparse = [g for g in geo if g.get("sparse")] or [{"cout": 0, "fan": 0}]
    parts: list[tuple[str, int]] = [
        ("ACT0", act * act_elems),
        ("ACT1", act * act_elems),
        ("WEIGHTS", max(w_size * g["group"] * g["fan"] for g in dense)),
        ("SUMS", 24 * max(g["cout"] for g in geo)),  # sums, sums of squares, extremes per channel
        ("LIVE", 20 * len(geo)),  # fb_live per stage
        ("CODES", 256 * model.input_shape[0] if code_table else 0),
        ("CACHE", 8 + cache_bytes),  # the cached stage, then the activations
        ("EMBED", 4 * dim),
        ("PROTOS", 8 * max_ways * dim),
        ("COUNTS", 4 * max_ways),
    ]
    frozen_each = [24 * g["cout"] if integer else 8 * g["cout"] for g in geo]
    for i, size in enumerate(frozen_each):
        parts.append((f"FROZEN{i}", size))
    if head is not None:
        wd = max_ways * dim
        parts += [
            ("HEAD_W", 4 * wd),
            ("HEAD_WQ", 4 * wd),
            ("HEAD_GW", 4 * wd),
            ("HEAD_B", 4 * max_ways),
            ("HEAD_GB", 4 * max_ways),
            ("HEAD_X", 4 * dim),
            ("HEAD_XS", 4 * max_support * dim),
            ("HEAD_LOGITS", 4 * max_ways),
            ("HEAD_IQ", 8),
        ]
    for i, g in enumerate(geo):
        if g.get("sparse"):
            parts.append((f"SCHED{i}", g["sched_bytes"]))
    offsets, total = {}, 0
    for name, size in parts:
        offsets[name] = total
        total += (size + 7) // 8 * 8
    # building a schedule (fewbit_init) counts codes in ACT0 and ACT1, or in a region of its own
    offsets["SCHED_TMP"] = offsets["ACT0"]
    if any(g.get("sparse") for g in geo) and 2 * act * act_elems < SCHEDULE_TMP_BYTES:
        offsets["SCHED_TMP"] = total
        total += SCHEDULE_TMP_BYTES
    # last, so that no other offset depends on the lane count (`lanes`: 8, or 16 on a core with vectors):
    # pooled outputs, two pixels' accumulators, row sums, the window's extremes, or a sparse layer's
    # pooled outputs, window extremes and its pixels' accumulators; then two pixels' im2col rows, or a
    # sparse layer's pixels as 16-bit halves of words
    offsets["BEST"] = total
    total += pad(max(24 * max(g["group"] for g in dense), 4 * (3 + lanes) * max(g["cout"] for g in sparse)))
    offsets["PATCH"] = total
    total += pad(max(2 * w_size * max(g["fan"] for g in dense), 2 * lanes * max(g["fan"] for g in sparse)))
    return {"offsets": offsets, "total": total, "stages": len(stages), "cache_bytes": cache_bytes}


def pad(size: int) -> int:
    """`size` rounded up to 8 bytes."""
    return (size + 7) // 8 * 8
