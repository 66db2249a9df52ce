"""The packed N:M format: exact round trip, layout, bit widths, bytes, errors."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse.pack import (fields_per_byte, pack, pack_keep_bits, pack_nm, pack_positions,
                           packed_bytes, position_bits, unpack, unpack_keep_bits,
                           unpack_positions)
from nmsparse.prune import nm_mask

PATTERNS = ("1:2", "1:4", "2:4", "2:8", "4:8", "1:8", "3:8", "2:16")


def _w(shape, *key):
  rng = np.random.default_rng(zlib.crc32(repr((shape,) + key).encode()))
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("axis", [-2, -1, 0])
def test_round_trip_is_exact(pattern, axis):
  m = int(pattern.split(":")[1])
  dtype = "bfloat16" if (PATTERNS.index(pattern) + axis) % 2 else "float32"
  # 5 and 3 groups: not multiples of the fields per byte; axis 0 of a 2-D operand
  shape = (5 * m, 3) if axis == 0 else (3, 5 * m, 3 * m)
  w = _w(shape, pattern, axis)
  p = jax.jit(pack_nm, static_argnums=(1, 2, 3))(w, pattern, axis, jnp.dtype(dtype))
  want = jnp.where(nm_mask(w, pattern, axis), w, 0).astype(dtype)
  got = jax.jit(unpack)(p)
  assert got.dtype == jnp.dtype(dtype) and got.shape == w.shape == p.shape
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_layout_and_values_are_the_kept_entries_in_order():
  w = jnp.asarray([[0.1, -3.0, 2.0, 0.5, 0.0, 0.5, -1.0, 4.0]]).T  # [8, 1], one column
  p = pack_nm(w, "2:4", axis=0)
  # group 0: |-3| and |2| at positions 1, 2; group 1: |-1|, |4| at 2, 3
  assert p.values.shape == (2, 4, 1)  # (N, Gp = 4 groups after padding to q=4, O)
  np.testing.assert_array_equal(p.values[:, :2, 0], [[-3.0, -1.0], [2.0, 4.0]])
  np.testing.assert_array_equal(unpack_positions(p.positions[:, :, 0], 4)[:, :2], [[1, 2], [2, 3]])
  assert p.positions.dtype == jnp.uint8 and p.positions.shape == (2, 1, 1)
  # padding groups: value 0, position 0
  np.testing.assert_array_equal(p.values[:, 2:, 0], 0)


def test_fewer_than_n_kept_fill_with_zero_slots():
  w = _w((16, 8), "few")
  mask = nm_mask(w, "1:4", axis=0)  # 1 kept per group, packed as 2:4
  p = pack(w, mask, "2:4", axis=0)
  np.testing.assert_array_equal(p.values[1], 0)
  np.testing.assert_array_equal(unpack(p), jnp.where(mask, w, 0))


@pytest.mark.parametrize("m, bits", [(2, 1), (4, 2), (8, 4), (16, 4), (32, 8)])
def test_position_bits(m, bits):
  assert position_bits(m) == bits and fields_per_byte(m) == 8 // bits
  pos = jnp.asarray(np.random.default_rng(m).integers(0, m, (3, 8 * fields_per_byte(m))))
  packed = pack_positions(pos, m)
  assert packed.dtype == jnp.uint8 and packed.shape == (3, 8)
  np.testing.assert_array_equal(unpack_positions(packed, m), pos)


def test_packed_bytes_beat_dense():
  # bf16: 2:4 -> 0.5625 of the dense bytes, 2:8 -> 0.3125
  dense = 4096 * 4096 * 2
  assert packed_bytes((4096, 4096), "2:4", 0, 2) / dense == pytest.approx(0.5625)
  assert packed_bytes((4096, 4096), "2:8", 1, 2) / dense == pytest.approx(0.3125)
  p = pack_nm(_w((64, 32), "bytes"), "2:8", 0, jnp.bfloat16)
  assert p.values.nbytes + p.positions.nbytes == packed_bytes((64, 32), "2:8", 0, 2)


@pytest.mark.parametrize("pattern", ["2:4", "2:8", "1:2"])
def test_keep_bits_round_trip(pattern):
  w = _w((3, 3, 16, 8), pattern)
  mask = nm_mask(w, pattern, axis=2)
  bits = pack_keep_bits(mask, pattern, axis=2)
  assert bits.shape == (3, 3, 16 // int(pattern.split(":")[1]), 8) and bits.dtype == jnp.uint8
  np.testing.assert_array_equal(unpack_keep_bits(bits, pattern, axis=2), mask)


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="not divisible by M=8"):
    pack_nm(jnp.ones((12, 8)), "2:8", axis=0)
  with pytest.raises(ValueError, match="M <= 256"):
    position_bits(300)
