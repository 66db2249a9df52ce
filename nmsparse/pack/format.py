"""The packed N:M operand: kept values in the compute dtype plus bit-packed in-group positions.

An operand pruned N:M along ``axis`` (length ``L = G*M``, ``G`` groups) is stored as

* ``values``: the grouped axis replaced by two axes ``(N, Gp)``: ``values[..., j, g, ...]`` is the
  ``j``-th kept entry (ascending position) of group ``g``. Reduction length ``N*Gp ~= L*N/M``.
* ``positions``: uint8, the grouped axis replaced by ``(N, Gq)``: the position in ``[0, M)`` of each
  kept value, ``position_bits(M)`` bits each (1 bit for M=2, 2 for M<=4, 4 for M<=16, else 8),
  little-endian bit-packed along the group axis: byte ``i`` holds groups ``i*q .. i*q+q-1``
  (``q = 8 // bits``), group ``i*q + t`` in bits ``[t*bits, (t+1)*bits)``.

``Gq = ceil(G / q)`` and ``Gp = q * Gq``: when ``G`` is not a multiple of ``q`` the last byte is
completed by at most ``q - 1`` padding groups (value 0, position 0). A group with fewer than ``N``
kept entries (``bimask``'s backward operand) fills its remaining slots with value 0, position 0.

FF operands (``W * M_ff`` of a dense ``[K, O]`` or HWIO kernel) pack along ``axis=-2`` (input
channels), BP operands (``W * M_bp``) along ``axis=-1`` (output channels). 2:4 in bf16 costs
``0.5 * (16 + 2) / 16 = 0.5625`` of the dense bf16 bytes, 2:8 ``0.25 * (16 + 4) / 16 = 0.3125``.

``pack``/``unpack`` round-trip exactly: ``unpack(pack(w, mask, p, axis)) == where(mask, w, 0)`` in
the values dtype. These are the references of the ``prune_pack`` kernel's outputs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse.prune.mask import check_groupable, nm_mask
from nmsparse.types import NMPattern, PatternLike


def position_bits(m: int) -> int:
  """Bits per stored position for groups of ``m``: 1, 2, 4 or 8 (a divisor of 8)."""
  for bits in (1, 2, 4, 8):
    if m <= 1 << bits:
      return bits
  raise ValueError(f"Packed N:M positions support M <= 256, got M={m}.")


def fields_per_byte(m: int) -> int:
  """How many positions one byte holds for groups of ``m``."""
  return 8 // position_bits(m)


def keep_bits_dtype(m: int):
  """The unsigned integer dtype of a per-group keep bitmap (bit ``r`` = entry ``r`` kept)."""
  for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
    if m <= jnp.iinfo(dtype).bits:
      return dtype
  raise ValueError(f"Keep bitmaps support M <= 32, got M={m}.")


@dataclasses.dataclass(frozen=True)
class PackedNM:
  """A packed N:M operand (a pytree: ``values`` and ``positions`` are its leaves).

  Attributes:
    values: kept values, ``shape[:axis] + (N, Gp) + shape[axis+1:]``.
    positions: bit-packed positions, uint8, ``shape[:axis] + (N, Gq) + shape[axis+1:]``.
    pattern: the N:M pattern.
    axis: the grouped axis of the dense operand (non-negative).
    length: the dense length of the grouped axis (``G * M``).
  """

  values: jax.Array
  positions: jax.Array
  pattern: NMPattern
  axis: int
  length: int

  @property
  def shape(self) -> tuple[int, ...]:
    """The dense operand's shape."""
    s = self.values.shape
    return s[:self.axis] + (self.length,) + s[self.axis + 2:]


jax.tree_util.register_dataclass(PackedNM, data_fields=["values", "positions"],
                                 meta_fields=["pattern", "axis", "length"])


def _layout(length: int, pattern: NMPattern) -> tuple[int, int, int, int]:
  groups = length // pattern.m
  q = fields_per_byte(pattern.m)
  gq = -(-groups // q)
  return groups, q, gq, gq * q


def pack_positions(pos: jax.Array, m: int) -> jax.Array:
  """``[..., Gp]`` positions in ``[0, m)`` -> ``[..., Gp/q]`` uint8, little-endian bit fields."""
  bits, q = position_bits(m), fields_per_byte(m)
  fields = pos.astype(jnp.uint32).reshape(pos.shape[:-1] + (pos.shape[-1] // q, q))
  shifts = jnp.arange(q, dtype=jnp.uint32) * bits
  return jnp.sum(fields << shifts, axis=-1).astype(jnp.uint8)


def unpack_positions(packed: jax.Array, m: int) -> jax.Array:
  """Inverse of :func:`pack_positions`: ``[..., Gq]`` uint8 -> ``[..., Gq*q]`` int32."""
  bits, q = position_bits(m), fields_per_byte(m)
  shifts = jnp.arange(q, dtype=jnp.uint32) * bits
  fields = (packed.astype(jnp.uint32)[..., None] >> shifts) & ((1 << bits) - 1)
  return fields.reshape(packed.shape[:-1] + (packed.shape[-1] * q,)).astype(jnp.int32)


def pack(w: jax.Array, mask: jax.Array, pattern: PatternLike, axis: int = -2,
         dtype=None) -> PackedNM:
  """Packs ``where(mask, w, 0)`` (at most ``N`` kept per group along ``axis``).

  Args:
    w: dense operand of any rank.
    mask: bool, ``w``'s shape, at most ``N`` true entries per group of ``M`` along ``axis``.
    pattern: the N:M pattern.
    axis: the grouped axis (``-2`` for FF operands, ``-1`` for BP operands).
    dtype: the values' dtype (default ``w.dtype``).

  Returns:
    The :class:`PackedNM` operand.

  Raises:
    ValueError: if ``w.shape[axis]`` is not divisible by ``M``.
  """
  pattern = NMPattern.parse(pattern)
  n, m = pattern.n, pattern.m
  axis = axis % w.ndim
  check_groupable(w.shape, axis, pattern)
  length = w.shape[axis]
  groups, _, gq, gp = _layout(length, pattern)
  dtype = w.dtype if dtype is None else dtype
  wv = jnp.moveaxis(w.astype(dtype), axis, -1)
  keep = jnp.moveaxis(mask.astype(bool), axis, -1)
  pad = [(0, 0)] * (wv.ndim - 1) + [(0, (gp - groups) * m)]
  wv = jnp.pad(wv, pad).reshape(wv.shape[:-1] + (gp, m))
  keep = jnp.pad(keep, pad).reshape(wv.shape)
  slot = jnp.cumsum(keep, axis=-1) - keep  # how many kept entries precede each entry
  r = jnp.arange(m, dtype=jnp.int32)
  vals, poss = [], []
  for j in range(n):
    sel = keep & (slot == j)
    vals.append(jnp.sum(jnp.where(sel, wv, jnp.zeros((), dtype)), axis=-1))
    poss.append(jnp.sum(jnp.where(sel, r, 0), axis=-1))
  values = jnp.moveaxis(jnp.stack(vals, axis=-2), (-2, -1), (axis, axis + 1))
  positions = pack_positions(jnp.stack(poss, axis=-2), m)
  positions = jnp.moveaxis(positions, (-2, -1), (axis, axis + 1))
  return PackedNM(values, positions, pattern, axis, length)


def pack_nm(w: jax.Array, pattern: PatternLike, axis: int = -2, dtype=None) -> PackedNM:
  """Prunes ``w`` N:M along ``axis`` with :func:`nmsparse.nm_mask` and packs it."""
  return pack(w, nm_mask(w, pattern, axis=axis), pattern, axis, dtype)


def unpack(p: PackedNM) -> jax.Array:
  """The dense operand ``where(mask, w, 0)`` in the values' dtype, exactly."""
  n, m = p.pattern.n, p.pattern.m
  values = jnp.moveaxis(p.values, (p.axis, p.axis + 1), (-2, -1))  # [..., N, Gp]
  pos = unpack_positions(jnp.moveaxis(p.positions, (p.axis, p.axis + 1), (-2, -1)), m)
  r = jnp.arange(m, dtype=jnp.int32)
  dense = jnp.zeros(values.shape[:-2] + (values.shape[-1], m), values.dtype)
  for j in reversed(range(n)):  # earlier slots win over value-0 filler slots at position 0
    dense = jnp.where(pos[..., j, :, None] == r, values[..., j, :, None], dense)
  dense = dense.reshape(dense.shape[:-2] + (-1,))[..., :p.length]
  return jnp.moveaxis(dense, -1, p.axis)


def pack_keep_bits(mask: jax.Array, pattern: PatternLike, axis: int = -2) -> jax.Array:
  """Per-group keep bitmap: the grouped axis shrinks to ``G``; bit ``r`` set if entry ``r`` kept."""
  pattern = NMPattern.parse(pattern)
  axis = axis % mask.ndim
  check_groupable(mask.shape, axis, pattern)
  m = pattern.m
  dtype = keep_bits_dtype(m)
  keep = jnp.moveaxis(mask.astype(dtype), axis, -1)
  keep = keep.reshape(keep.shape[:-1] + (keep.shape[-1] // m, m))
  bits = jnp.sum(keep << jnp.arange(m, dtype=dtype), axis=-1).astype(dtype)
  return jnp.moveaxis(bits, -1, axis)


def unpack_keep_bits(bits: jax.Array, pattern: PatternLike, axis: int = -2) -> jax.Array:
  """Inverse of :func:`pack_keep_bits`: the bool mask."""
  pattern = NMPattern.parse(pattern)
  axis = axis % bits.ndim
  m = pattern.m
  moved = jnp.moveaxis(bits, axis, -1)
  keep = ((moved[..., None] >> jnp.arange(m, dtype=bits.dtype)) & 1).astype(bool)
  keep = keep.reshape(moved.shape[:-1] + (moved.shape[-1] * m,))
  return jnp.moveaxis(keep, -1, axis)


def packed_bytes(shape: tuple[int, ...], pattern: PatternLike, axis: int, itemsize: int) -> int:
  """Bytes of the packed operand of a dense ``shape`` (values + positions)."""
  pattern = NMPattern.parse(pattern)
  axis = axis % len(shape)
  _, _, gq, gp = _layout(shape[axis], pattern)
  rest = int(np.prod(shape)) // shape[axis]
  return rest * pattern.n * (gp * itemsize + gq)
