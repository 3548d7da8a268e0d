"""Bit packing and mask encoding: exact round trips, exact sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.artifact.packing import (
    decode_mask,
    encode_mask,
    index_bits,
    mask_nbytes,
    pack_bits,
    packed_nbytes,
    unpack_bits,
)


@settings(max_examples=150, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_pack_unpack_round_trip(bits: int, data: st.DataObject) -> None:
    values = np.asarray(data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=300)), dtype=np.int64)
    packed = pack_bits(values, bits)
    assert len(packed) == packed_nbytes(values.size, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.size), values)


@settings(max_examples=50, deadline=None)
@given(bits=st.integers(9, 32), data=st.data())
def test_wide_values_round_trip(bits: int, data: st.DataObject) -> None:
    values = np.asarray(data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=50)), dtype=np.int64)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, bits), bits, values.size), values)


def test_bit_order_is_little_endian_lsb_first() -> None:
    assert pack_bits(np.array([1, 2, 3, 0]), 2) == bytes([0b00111001])
    assert pack_bits(np.array([5, 3]), 3) == bytes([0b00011101])


@pytest.mark.parametrize("bits", [0, 33, 2.5])
def test_bad_bits_raise(bits: object) -> None:
    with pytest.raises(ValueError, match="bits"):
        pack_bits(np.array([0]), bits)  # type: ignore[arg-type]


def test_out_of_range_values_raise() -> None:
    with pytest.raises(ValueError, match="lie in"):
        pack_bits(np.array([4]), 2)
    with pytest.raises(ValueError, match="lie in"):
        pack_bits(np.array([-1]), 2)
    with pytest.raises(ValueError, match="bytes for"):
        unpack_bits(b"\x00\x00", 4, 1)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mask_round_trip_and_smaller_encoding(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 2000))
    density = data.draw(st.floats(0.0, 1.0))
    seed = data.draw(st.integers(0, 2**16))
    mask = np.random.default_rng(seed).random(n) < density
    fmt, payload = encode_mask(mask)
    kept = int(mask.sum())
    assert len(payload) == mask_nbytes(n, kept)
    assert len(payload) == min(packed_nbytes(n, 1), packed_nbytes(kept, index_bits(n)))
    np.testing.assert_array_equal(decode_mask(fmt, payload, n, kept), mask)


def test_sparse_masks_use_an_index_list_dense_ones_a_bitmap() -> None:
    sparse = np.zeros(10_000, bool)
    sparse[[3, 500, 9000]] = True
    assert encode_mask(sparse)[0] == "indices"
    assert encode_mask(np.random.default_rng(0).random(10_000) < 0.5)[0] == "bitmap"


def test_inconsistent_masks_raise() -> None:
    with pytest.raises(ValueError):
        decode_mask("bitmap", b"\xff", 8, 3)
    with pytest.raises(ValueError):
        decode_mask("indices", pack_bits(np.array([5, 2]), index_bits(8)), 8, 2)
    with pytest.raises(ValueError):
        decode_mask("rle", b"", 8, 0)
