"""Convert and size accounting: packed containers round-trip, bytes match, outputs match."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.compress import PackedTensor, calibrate, compress, convert, packed_layers, size_report
from fewbit.compress.convert import PackedLayer, pack_dense, pack_float, to_torch

SPECS = [
    "quant:w4",
    "quant:w8a8:asym",
    "quant:w1",
    "quant:w3:per_tensor:mse",
    "prune:0.5,quant:w4a8",
    "quant:w2:lsq,prune:0.75",
    "cluster:16",
    "prune:2:4,cluster:4",
    "prune:0.9",
    "prune:0.5,quant:w1",
]


def _stored_bytes(converted: torch.nn.Module) -> int:
    total = 0
    for _, layer in packed_layers(converted):
        total += len(layer.packed_weight.payload())
        total += 0 if layer.bias is None else 4 * layer.bias.numel()
        total += 0 if layer.act is None else layer.act.nbytes
    plain = [p for n, p in converted.named_parameters()]
    return total + 4 * sum(p.numel() for p in plain)


@pytest.mark.parametrize("spec", SPECS)
def test_size_report_equals_converted_bytes_and_outputs_match(mlp, spec: str) -> None:
    model = compress(mlp, spec)
    x = torch.rand(32, 64)
    calibrate(model, [x])
    converted = convert(model)
    assert all(
        isinstance(m, PackedLayer) for m in (converted.features[1], converted.features[3], converted.head)
    )
    report = size_report(model)
    assert report.bytes == size_report(converted).bytes == _stored_bytes(converted)
    assert torch.equal(converted(x), model(x))  # bit for bit
    data = report.to_dict()
    assert {"bytes", "float32_bytes", "ratio", "layers"} <= set(data)
    assert data["float32_bytes"] == 4 * sum(p.numel() for p in mlp.parameters())
    assert {"name", "params", "bits", "sparsity", "bytes"} <= set(data["layers"][0])


def test_packed_tensor_round_trips_through_its_payload(mlp) -> None:
    model = compress(mlp, "prune:0.6,quant:w3:asym")
    for _, layer in packed_layers(convert(model)):
        packed = layer.packed_weight
        again = PackedTensor.from_payload(packed.meta(), packed.payload())
        assert len(packed.payload()) == packed.nbytes
        assert torch.equal(to_torch(again), to_torch(packed))


def test_bytes_are_as_stored() -> None:
    w = torch.randn(16, 32)
    packed = pack_float(w, bits=4, axis=0)
    assert packed.nbytes == 16 * 32 * 4 // 8 + 16 * 4  # codes + float32 scale per channel
    mask = (torch.arange(16 * 32) % 2 == 0).reshape(16, 32)
    sparse = pack_float(w, bits=2, axis=None, mask=mask)
    assert sparse.mask_format == "bitmap" and sparse.nbytes == 256 * 2 // 8 + 4 + 16 * 32 // 8
    very_sparse = pack_dense(w, mask=torch.arange(16 * 32).reshape(16, 32) < 5)
    # five kept in a row: Rice gaps of 0 take one unary bit each (1 byte) after the parameter byte
    assert very_sparse.mask_format == "rice" and very_sparse.nbytes == 5 * 4 + 2
    assert torch.equal(to_torch(very_sparse).reshape(-1)[:5], w.reshape(-1)[:5])
    assert torch.all(to_torch(very_sparse).reshape(-1)[5:] == 0)
    scattered = torch.zeros(16 * 32, dtype=torch.bool)
    scattered[[3, 200, 500]] = True  # far apart: three 9-bit indices beat Rice's 5 bytes
    listed = pack_dense(w, mask=scattered.reshape(16, 32))
    assert listed.mask_format == "indices" and listed.nbytes == 3 * 4 + (3 * 9 + 7) // 8


def test_plain_model_reports_float32(mlp) -> None:
    report = size_report(mlp)
    assert report.bytes == report.float32_bytes == 4 * sum(p.numel() for p in mlp.parameters())
    assert report.ratio == 1.0


def test_conv_layers_convert(conv4) -> None:
    model = compress(conv4, "prune:channel:0.25@features.*,quant:w4a8")
    x = torch.randn(4, 1, 28, 28)
    calibrate(model, [x])
    converted = convert(model)
    assert torch.equal(converted(x), model(x))
    assert size_report(model).bytes == size_report(converted).bytes


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(1, 8),
    symmetric=st.booleans(),
    per_channel=st.booleans(),
    sparsity=st.sampled_from([0.0, 0.3, 0.97]),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 20)),
    seed=st.integers(0, 999),
)
def test_packing_round_trips_exactly(bits, symmetric, per_channel, sparsity, shape, seed) -> None:
    from fewbit.compress.prune import magnitude_mask
    from fewbit.compress.quantize import dequantize, quantize_codes, weight_qparams

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    mask = magnitude_mask(w, sparsity, "unstructured") if sparsity else None
    packed = pack_float(w, bits, symmetric=symmetric, axis=0 if per_channel else None, mask=mask)
    scale, zp = weight_qparams(w, bits, symmetric, per_channel, "minmax", 99.9)
    s, z = scale.reshape(-1, 1), zp.reshape(-1, 1)
    expected = dequantize(quantize_codes(w, s, z, bits, symmetric), s, z, bits, symmetric)
    if mask is not None:
        expected = expected * mask
    assert torch.equal(to_torch(packed), expected)
    again = PackedTensor.from_payload(packed.meta(), packed.payload())
    assert torch.equal(to_torch(again), expected) and len(packed.payload()) == packed.nbytes
