"""Support-set statistics (`norm_stats: support`) and the fixed-point requantization under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fewbit.runtime as rt
from fewbit.deploy import export
from fewbit.runtime import fixedpoint
from fewbit.runtime.support_stats import SupportStatistics, body_stages
from tests.deploy.helpers import compressed_conv4, compressed_mlp
from tests.runtime.test_agreement import _task


@settings(max_examples=300, deadline=None)
@given(
    m=st.floats(1e-9, 1e6) | st.floats(-1e6, -1e-9),
    o=st.floats(-1e6, 1e6),
    acc=st.integers(-(2**24), 2**24),
)
def test_fixed_point_is_the_affine_map_rounded(m: float, o: float, acc: int) -> None:
    """(M * acc + B) >> S, rounded half up, lands on round(m * acc + o) or next to it (2**-30 relative)."""
    mult, shift, offset = fixedpoint.multiplier(m, o)
    assert abs(mult) < 2**31 and abs(offset) <= 2**61 and 0 <= shift <= 62
    assert abs(mult / 2.0**shift - m) <= abs(m) * 2.0**-29 + 2.0**-shift
    per_channel = (np.array([mult]), np.array([shift]), np.array([offset]))
    got = int(fixedpoint.requantize(np.array([acc]), *per_channel, 0, -(2**62), 2**62)[0])
    exact = m * acc + o
    assert abs(got - exact) <= 0.5 + abs(exact) * 2.0**-28 + 1e-6


def test_requantization_clips_and_applies_the_zero_point() -> None:
    mult, shift, offset = fixedpoint.multiplier(0.5, 3.0)
    acc = np.array([-100, 0, 7, 1000])
    out = fixedpoint.requantize(acc, np.array([mult]), np.array([shift]), np.array([offset]), 10, 10, 255)
    # 0.5 * acc + 3, rounded half up, + 10, clipped to [10, 255], minus 10
    np.testing.assert_array_equal(out, [0, 3, 7, 245])


def _runtime(model, tmp_path: Path, algorithm: str = "protonet") -> rt.RuntimeModel:  # noqa: ANN001
    export(model, tmp_path / "m.fewbit", algorithm=algorithm)
    return rt.load(tmp_path / "m.fewbit")


@pytest.mark.parametrize(("spec", "integer"), [("quant:w4a8", True), ("quant:w4", False), (None, False)])
def test_support_set_embedded_with_its_own_frozen_statistics_equals_the_batch(
    spec: str | None, integer: bool, tmp_path: Path
) -> None:
    """Layer-by-layer statistics of the support set are its batch statistics: the support set
    embeds as one batch does (float32 rounding; on an integer body, the fixed-point rounding)."""
    runtime = _runtime(compressed_conv4(spec, ways=0, width=32), tmp_path)
    sx, _, qx, _ = _task(5, 2, 4, seed=1)
    stats = SupportStatistics(runtime, sx)
    assert stats.integer is integer
    batch = runtime.embed(sx)
    np.testing.assert_allclose(stats.embed(sx), batch, rtol=1e-4, atol=1e-4 * np.abs(batch).max())
    alone = np.concatenate([stats.embed(qx[i : i + 1]) for i in range(len(qx))])
    together = stats.embed(qx)
    if integer:  # each query on its own: the others change nothing
        np.testing.assert_array_equal(alone, together)
    else:
        np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-5 * np.abs(together).max())


def test_support_statistics_classify_about_as_well_as_the_batch(tmp_path: Path) -> None:
    runtime = _runtime(compressed_conv4("quant:w4a8", ways=0), tmp_path)
    sx, sy, qx, qy = _task(5, 5, 10, seed=7)
    batch = (rt.adapt(runtime, sx, sy).predict(qx) == qy).mean()
    support = (rt.adapt(runtime, sx, sy, norm_stats="support").predict(qx) == qy).mean()
    assert support >= 0.8 and batch >= 0.8


def test_support_mode_adapts_the_head_only(tmp_path: Path) -> None:
    runtime = _runtime(compressed_mlp("quant:w4a8", ways=5), tmp_path, algorithm="maml")
    sx, sy, _, _ = _task(5, 1, 1, seed=2)
    tuned = rt.adapt(runtime, sx, sy, method="sgd", steps=3, scope="head", norm_stats="support")
    assert len(tuned.losses) == 3 and tuned.losses[-1] < tuned.losses[0]
    with pytest.raises(ValueError, match="norm_stats"):
        rt.adapt(runtime, sx, sy, norm_stats="running")


@pytest.mark.parametrize("arch", ["conv4", "mlp"])
def test_per_batch_activation_ranges_come_from_the_support_set(arch: str, tmp_path: Path) -> None:
    """An uncalibrated quantizer takes each batch's range; under support statistics it takes the
    support set's, so a query's embedding no longer depends on the other queries."""
    from fewbit.compress import compress_
    from fewbit.models import conv4, mlp

    torch.manual_seed(0)
    body = conv4(ways=5, width=16) if arch == "conv4" else mlp(ways=5, in_features=784, hidden=(32,))
    runtime = _runtime(compress_(body, "quant:w4a8").eval(), tmp_path, algorithm="anil")
    sx, sy, qx, qy = _task(5, 2, 6, seed=3)
    stats = SupportStatistics(runtime, sx)
    assert stats.integer and all(not q.dynamic for q in stats.quant if q is not None)
    alone = np.concatenate([stats.embed_fixed(qx[i : i + 1]) for i in range(len(qx))])
    np.testing.assert_array_equal(alone, stats.embed_fixed(qx))
    batch = runtime.embed(sx)  # the support set as one batch: per-batch ranges are the support set's
    np.testing.assert_allclose(stats.embed(sx), batch, rtol=0.05, atol=0.05 * np.abs(batch).max())
    tuned = rt.adapt(runtime, sx, sy, norm_stats="support")
    assert tuned.predict(qx).shape == qy.shape


def test_body_stages_read_the_conv4_and_mlp_layouts(tmp_path: Path) -> None:
    conv = body_stages(_runtime(compressed_conv4("quant:w4a8", ways=0, width=8), tmp_path))
    assert [(s.linop.kind, s.bn is not None, s.relu, s.pool) for s in conv] == [("conv2d", True, True, (2, 2))] * 4
    mlp_stages = body_stages(_runtime(compressed_mlp("quant:w4a8", ways=5), tmp_path))
    assert [(s.linop.kind, s.bn, s.relu, s.flatten) for s in mlp_stages] == [
        ("linear", None, True, True),
        ("linear", None, True, False),
    ]
