"""Bit packing and mask encoding: exact round trips, exact sizes, hostile Rice streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewbit.artifact.packing import (
    best_rice_parameter,
    decode_mask,
    encode_mask,
    index_bits,
    max_rice_parameter,
    pack_bits,
    packed_nbytes,
    rice_decode,
    rice_encode,
    rice_nbytes,
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
def test_mask_round_trip_and_smallest_encoding(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 2000))
    density = data.draw(st.floats(0.0, 1.0))
    seed = data.draw(st.integers(0, 2**16))
    mask = np.random.default_rng(seed).random(n) < density
    fmt, payload = encode_mask(mask)
    kept = np.flatnonzero(mask)
    sizes = {
        "bitmap": packed_nbytes(n, 1),
        "indices": packed_nbytes(kept.size, index_bits(n)),
        "rice": best_rice_parameter(kept, n)[1],
    }
    assert len(payload) == sizes[fmt] == min(sizes.values())
    np.testing.assert_array_equal(decode_mask(fmt, payload, n, kept.size), mask)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_rice_round_trips_for_every_parameter(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 5000))
    mask = np.random.default_rng(data.draw(st.integers(0, 2**16))).random(n) < data.draw(st.floats(0.0, 1.0))
    positions = np.flatnonzero(mask)
    k = data.draw(st.integers(0, max_rice_parameter(n)))
    stream = rice_encode(positions, k)
    assert len(stream) == rice_nbytes(positions, k)
    np.testing.assert_array_equal(rice_decode(stream, n, positions.size), positions)
    np.testing.assert_array_equal(decode_mask("rice", stream, n, positions.size), mask)


def test_rice_codes_a_75_percent_sparse_mask_near_its_entropy() -> None:
    """A random 25%-dense mask: the bitmap costs 1 bit an element, the entropy is 0.811."""
    n = 64 * 64 * 9
    mask = np.random.default_rng(0).random(n) < 0.25
    fmt, payload = encode_mask(mask)
    p = mask.mean()
    entropy_bytes = n * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    assert fmt == "rice"
    assert len(payload) <= 1.03 * entropy_bytes < 0.85 * packed_nbytes(n, 1)
    assert best_rice_parameter(np.flatnonzero(mask), n)[0] == 1  # mean gap 3: k = log2(3) rounded down


@settings(max_examples=300, deadline=None)
@given(
    stream=st.binary(max_size=64),
    numel=st.sampled_from([1, 7, 64, 1000, 1 << 24]),
    kept=st.integers(0, 1 << 24),
)
def test_hostile_rice_streams_raise_value_error_quickly(stream: bytes, numel: int, kept: int) -> None:
    """Any bytes: either a valid strictly increasing position list inside the tensor, or ValueError."""
    kept = min(kept, numel)
    try:
        positions = rice_decode(stream, numel, kept)
    except ValueError:
        return
    assert positions.size == kept
    assert kept == 0 or (positions[0] >= 0 and positions[-1] < numel and np.all(np.diff(positions) > 0))


@pytest.mark.parametrize(
    ("stream", "numel", "kept", "message"),
    [
        (b"", 8, 1, "parameter byte"),
        (bytes([40, 0]), 8, 1, "parameter"),
        (bytes([0, 0xFF, 0xFF]), 8, 1, "longer than|codes 0 gaps"),
        (bytes([0, 0b0000_0000]), 8, 3, "trailing|padding"),
        (bytes([0, 0b1111_1110, 0xFF]), 64, 1, "trailing"),
        (bytes([0, 0b0111_1111]), 4, 1, "past the end"),
        (bytes([3, 0xFF]), 8, 4, "remainders"),
    ],
)
def test_malformed_rice_streams_name_the_problem(stream: bytes, numel: int, kept: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rice_decode(stream, numel, kept)


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
    with pytest.raises(ValueError):
        decode_mask("rice", rice_encode(np.array([1, 5]), 1), 8, 3)
