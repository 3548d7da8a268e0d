"""Uniform quantization: grid properties (hypothesis), STE and LSQ gradients, activation calibration."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.compress import QuantConfig, calibrate, compress
from fewbit.compress.quantize import ActQuant, WeightQuant, qrange

configs = st.builds(
    QuantConfig,
    bits_weight=st.integers(1, 8),
    symmetric=st.booleans(),
    granularity=st.sampled_from(["per_tensor", "per_channel"]),
    observer=st.sampled_from(["minmax", "percentile", "mse"]),
    learnable_step=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(
    config=configs,
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 6),
    cols=st.integers(1, 40),
    spread=st.floats(1e-3, 1e3),
)
def test_quantized_weights_lie_on_the_grid(
    config: QuantConfig, seed: int, rows: int, cols: int, spread: float
) -> None:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * spread
    quant = WeightQuant(config, w)
    q = quant(w).detach()
    scale, zp = quant.qparams(w)
    scale = scale.reshape(-1, 1)
    zp = zp.reshape(-1, 1).float()
    bits, qmin, qmax = config.bits_weight, *qrange(config.bits_weight, config.symmetric)
    for row in q:  # at most 2^b distinct values per channel
        assert row.unique().numel() <= 2**bits
    index = q / scale + (0 if config.symmetric else zp)
    assert torch.allclose(index, index.round(), atol=1e-3)  # on the grid
    assert index.round().min() >= qmin and index.round().max() <= qmax
    if config.symmetric and bits == 1:
        assert torch.allclose(q.abs(), scale.expand_as(q))
        return
    lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
    inside = (w >= lo) & (w <= hi)
    err = (q - w).abs()
    assert torch.all(err[inside] <= (scale / 2).expand_as(w)[inside] * (1 + 1e-4) + 1e-6)  # half a step


def test_straight_through_gradient_and_exact_values() -> None:
    w = torch.randn(8, 16, requires_grad=True)
    quant = WeightQuant(QuantConfig(bits_weight=3), w.detach())
    out = quant(w)
    scale, _ = quant.qparams(w)
    assert torch.equal(out.detach(), torch.round(w.detach() / scale[:, None]).clamp(-4, 3) * scale[:, None])
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_lsq_step_is_a_parameter_that_learns() -> None:
    w = torch.randn(8, 16, requires_grad=True)
    quant = WeightQuant(QuantConfig(bits_weight=4, learnable_step=True), w.detach())
    assert isinstance(quant.step, torch.nn.Parameter)
    (quant(w) - 2 * w.detach()).pow(2).sum().backward()
    assert quant.step.grad is not None and quant.step.grad.abs().sum() > 0
    assert w.grad is not None


def test_second_order_gradients_flow() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    for config in (QuantConfig(bits_weight=4), QuantConfig(bits_weight=2, learnable_step=True)):
        quant = WeightQuant(config, w.detach())
        x = torch.randn(3, 6)
        loss = (x @ quant(w).t()).pow(2).sum()
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        fast = w - 0.1 * g
        outer = (x @ quant(fast).t()).pow(2).sum()
        (gw,) = torch.autograd.grad(outer, w)
        assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_activation_calibration_sets_static_scale(mlp) -> None:
    model = compress(mlp, "quant:w8a4")
    acts = [m for m in model.modules() if isinstance(m, ActQuant)]
    assert len(acts) == 3 and all(float(a.scale) == 0 for a in acts)
    x = torch.rand(64, 64)
    calibrate(model, [x[:32], (x[32:], None)])
    assert all(float(a.scale) > 0 for a in acts)
    first = acts[0]
    seen = first(torch.rand(10, 64))
    assert seen.unique().numel() <= 2**4
    assert float(first.zero_point) == 0.0  # non-negative inputs use the unsigned range


def test_one_bit_is_sign_times_scale() -> None:
    w = torch.tensor([[0.5, -0.2, 0.0, 1.3]])
    quant = WeightQuant(QuantConfig(bits_weight=1), w)
    s = w.abs().mean()
    assert torch.allclose(quant(w), torch.tensor([[1.0, -1.0, 1.0, 1.0]]) * s)
