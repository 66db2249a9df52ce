"""Value-serial N:M matmuls on packed operands: ``x @ unpack(W_ff)`` and ``dy @ unpack(W_bp)^T``.

Backend: a Triton-lowered ``pallas_call`` (``compiler_params`` name Triton explicitly). The kernel
decodes bit fields and selects values per element in registers, then feeds ``16 x R x 128`` tiles
to the tensor cores: small-M dots at any batch size, which Triton schedules itself, whereas Mosaic
GPU's warpgroup MMA wants 64-row tiles and TMA-described shared-memory layouts that the decoded
operand does not come in. The same code runs in the Pallas interpreter on CPU.

Only packed operands are read: per group of ``M`` weights, ``N`` values and ``N`` bit-packed
positions (:mod:`nmsparse.pack`). One reduction step covers ``rows`` byte rows of the positions,
i.e. ``rows * q * M = 16 * rows`` reduction elements (``q * M == 16`` for every supported M): the
kernel loads the ``N`` value tiles and position bytes, expands them in registers into the dense
``[16*rows, bo]`` tile (``N`` selects per element, ``value where field == offset``) in natural
order, and issues one tensor-core dot against the matching contiguous slice of the activation.
Per group of ``M`` it moves ``N*(itemsize + bits/8)`` bytes instead of ``M * itemsize``. When the
output alone gives too few programs, the reduction is split and partial sums are added in the
wrapper (one extra small XLA op).

Any batch size works (rows are zero-padded to the block); shapes the tiles do not divide are
zero-padded in the wrapper (a copy of the operand, so callers should use this kernel where they
divide: every model shape here does).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from nmsparse.kernels import backend
from nmsparse.pack import PackedNM, fields_per_byte, position_bits, unpack

_SMS = 132  # H100 SXM multiprocessors: the split heuristic targets a multiple of this


@dataclasses.dataclass(frozen=True)
class MatmulBlocks:
  """Tile sizes: ``bb`` batch rows, ``bo`` output columns, ``rows`` packed byte rows per step,
  ``splits`` programs sharing one output tile's reduction (``None``: enough splits to reach
  about ``programs`` programs)."""

  bb: int = 16
  bo: int = 32
  rows: int = 16
  splits: int | None = None
  num_warps: int = 4
  num_stages: int = 3
  programs: int = 2 * _SMS


def default_blocks(batch: int, out_cols: int, transpose: bool = False) -> MatmulBlocks:
  """Default blocks, from the H100 block sweep in ``benchmarks/README.md``.

  Forward: ``bo=128``, 8 warps, the reduction split to ~one program per SM. Backward-data:
  ``bo=32``, 4 warps, ~two programs per SM.
  """
  bb = 16 if batch <= 16 else 32 if batch <= 32 else 64
  if transpose:
    return MatmulBlocks(bb=bb, bo=32 if out_cols >= 32 else 16, num_warps=4, programs=2 * _SMS)
  bo = 128 if out_cols >= 128 else max(16, pl.next_power_of_2(out_cols))
  return MatmulBlocks(bb=bb, bo=bo, num_warps=8, programs=_SMS)


def reference_nm_matmul(x: jax.Array, ff: PackedNM, *, blocks: MatmulBlocks | None = None,
                        poison: int = 0) -> jax.Array:
  """``x @ unpack(ff)`` in jnp (float32 accumulation, ``x``'s dtype out)."""
  del blocks, poison
  _check(x, ff, 0)
  return jnp.dot(x, unpack(ff).astype(x.dtype), preferred_element_type=jnp.float32,
                 precision=lax.Precision.HIGHEST).astype(x.dtype)


def reference_nm_matmul_t(dy: jax.Array, bp: PackedNM, *, blocks: MatmulBlocks | None = None,
                          poison: int = 0) -> jax.Array:
  """``dy @ unpack(bp)^T`` in jnp (float32 accumulation, ``dy``'s dtype out)."""
  del blocks, poison
  _check(dy, bp, 1)
  return jnp.dot(dy, unpack(bp).astype(dy.dtype).T, preferred_element_type=jnp.float32,
                 precision=lax.Precision.HIGHEST).astype(dy.dtype)


def _check(x: jax.Array, p: PackedNM, axis: int):
  if len(p.shape) != 2 or p.axis != axis:
    raise ValueError(f"Expected a packed 2-D operand grouped along axis {axis}; got shape "
                     f"{p.shape} grouped along axis {p.axis}.")
  red = p.shape[axis]
  if x.ndim != 2 or x.shape[1] != red:
    raise ValueError(f"Activation {x.shape} does not match the packed operand {p.shape} "
                     f"(reduction over axis {axis}, length {red}).")


def _kernel(x_ref, v_ref, p_ref, *refs, n: int, m: int, transpose: bool, rows: int, bb: int,
            bt: int, steps: int, precision):
  out_ref = refs[-1]
  bits, q = position_bits(m), fields_per_byte(m)
  kt = rows * q * m  # reduction elements per step (q * m == 16)
  col, row_blk, split = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  b0, c0 = row_blk * bb, col * bt
  shifts = jnp.arange(q, dtype=jnp.int32) * bits
  offsets = jnp.arange(m, dtype=jnp.int32)

  def step(it, acc):
    i0 = pl.multiple_of((split * steps + it) * rows, rows)
    xs = x_ref[pl.ds(b0, bb), pl.ds(pl.multiple_of(i0 * q * m, kt), kt)]  # [bb, kt], natural order
    if transpose:  # values [K, N, Gq, q], positions [K, N, Gq]; tile [bt, rows, q, m]
      tile = jnp.zeros((bt, rows, q, m), v_ref.dtype)
      for j in reversed(range(n)):  # earlier slots win over value-0 filler slots
        v = v_ref[pl.ds(c0, bt), j, pl.ds(i0, rows), :]
        f = (p_ref[pl.ds(c0, bt), j, pl.ds(i0, rows)].astype(jnp.int32)[:, :, None]
             >> shifts[None, None, :]) & ((1 << bits) - 1)
        tile = jnp.where(f[..., None] == offsets, v[..., None], tile)
      return acc + lax.dot_general(xs, tile.reshape(bt, kt), (((1,), (1,)), ((), ())),
                                   precision=precision, preferred_element_type=jnp.float32)
    tile = jnp.zeros((rows, q, m, bt), v_ref.dtype)  # values [N, Gq, q, O], positions [N, Gq, O]
    for j in reversed(range(n)):
      v = v_ref[j, pl.ds(i0, rows), :, pl.ds(c0, bt)]
      f = (p_ref[j, pl.ds(i0, rows), pl.ds(c0, bt)].astype(jnp.int32)[:, None, :]
           >> shifts[None, :, None]) & ((1 << bits) - 1)
      tile = jnp.where(f[:, :, None, :] == offsets[None, None, :, None], v[:, :, None, :], tile)
    return acc + lax.dot_general(xs, tile.reshape(kt, bt), (((1,), (0,)), ((), ())),
                                 precision=precision, preferred_element_type=jnp.float32)

  acc = lax.fori_loop(0, steps, step, jnp.zeros((bb, bt), jnp.float32))
  out_ref[...] = acc.astype(out_ref.dtype)


def _matmul(x: jax.Array, p: PackedNM, transpose: bool, blocks: MatmulBlocks | None,
            poison: int) -> jax.Array:
  n, m = p.pattern.n, p.pattern.m
  q = fields_per_byte(m)
  batch, red = x.shape
  out_cols = p.shape[0] if transpose else p.shape[1]
  blocks = blocks or default_blocks(batch, out_cols, transpose)
  bb, bt, rows = blocks.bb, blocks.bo, blocks.rows
  gq = p.positions.shape[-1] if transpose else p.positions.shape[1]
  gq_pad = -(-gq // rows) * rows
  cols_pad = -(-out_cols // bt) * bt
  batch_pad = -(-batch // bb) * bb
  if (batch_pad, gq_pad * q * m) != (batch, red):  # zero rows / zero reduction tail
    x = jnp.pad(x, ((0, batch_pad - batch), (0, gq_pad * q * m - red)))
  values, positions = p.values, p.positions
  if transpose:  # [K, N, Gp] -> [K, N, Gq, q]
    values = values.reshape(out_cols, n, gq, q)
    if (gq_pad, cols_pad) != (gq, out_cols):
      values = jnp.pad(values, ((0, cols_pad - out_cols), (0, 0), (0, gq_pad - gq), (0, 0)))
      positions = jnp.pad(positions, ((0, cols_pad - out_cols), (0, 0), (0, gq_pad - gq)))
  else:  # [N, Gp, O] -> [N, Gq, q, O]
    values = values.reshape(n, gq, q, out_cols)
    if (gq_pad, cols_pad) != (gq, out_cols):
      values = jnp.pad(values, ((0, 0), (0, gq_pad - gq), (0, 0), (0, cols_pad - out_cols)))
      positions = jnp.pad(positions, ((0, 0), (0, gq_pad - gq), (0, cols_pad - out_cols)))
  total_steps = gq_pad // rows
  n_cols, n_rows = cols_pad // bt, batch_pad // bb
  splits = blocks.splits
  if splits is None:
    want = max(1, blocks.programs // (n_cols * n_rows))
    splits = max(d for d in range(1, total_steps + 1) if total_steps % d == 0 and d <= want)
  if total_steps % splits:
    raise ValueError(f"splits={splits} must divide the {total_steps} reduction steps.")
  out_dtype = x.dtype if splits == 1 else jnp.float32
  out_shape = jax.ShapeDtypeStruct((splits, batch_pad, cols_pad), out_dtype)
  out_spec = pl.BlockSpec((None, bb, bt), lambda c, b, s: (s, b, c))
  in_specs = [pl.no_block_spec] * 3
  args = [x, values, positions]
  aliases = {}
  if poison:
    args.append(jnp.full(out_shape.shape, jnp.nan, out_dtype))
    in_specs.append(out_spec)
    aliases = {3: 0}
  precision = lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
  kernel = functools.partial(_kernel, n=n, m=m, transpose=transpose, rows=rows, bb=bb, bt=bt,
                             steps=total_steps // splits, precision=precision)
  out = pl.pallas_call(
      kernel, out_shape=out_shape, grid=(n_cols, n_rows, splits), in_specs=in_specs,
      out_specs=out_spec, input_output_aliases=aliases,
      name=f"nm_matmul{'_t' if transpose else ''}_{n}of{m}",
      **backend.call_kwargs(blocks.num_warps, blocks.num_stages))(*args)
  if poison:  # checks every element of every split was written; callers see the sum
    return out
  y = out[0] if splits == 1 else jnp.sum(out, axis=0).astype(out_dtype)
  if (batch_pad, cols_pad) != (batch, out_cols):
    y = y[:batch, :out_cols]
  return y.astype(x.dtype)


def nm_matmul(x: jax.Array, ff: PackedNM, *, blocks: MatmulBlocks | None = None,
              poison: int = 0) -> jax.Array:
  """``x @ unpack(ff)`` reading only the packed operand.

  Args:
    x: ``[B, K]`` activations (any ``B``), in the operand's compute dtype.
    ff: packed ``[K, O]`` operand grouped along ``K`` (axis 0).
    blocks: tile sizes (default: by batch and output width).
    poison: test hook; non-zero returns the raw ``[splits, Bp, Op]`` partial sums of an output
      pre-filled with NaN, so that unwritten elements show.

  Returns:
    ``[B, O]`` in ``x``'s dtype (float32 accumulation).
  """
  _check(x, ff, 0)
  return _matmul(x, ff, False, blocks, poison)


def nm_matmul_t(dy: jax.Array, bp: PackedNM, *, blocks: MatmulBlocks | None = None,
                poison: int = 0) -> jax.Array:
  """``dy @ unpack(bp)^T`` reading only the packed operand (the backward-data product).

  Args:
    dy: ``[B, O]`` output cotangents (any ``B``).
    bp: packed ``[K, O]`` operand grouped along ``O`` (axis 1).
    blocks, poison: as in :func:`nm_matmul`.

  Returns:
    ``[B, K]`` in ``dy``'s dtype.
  """
  _check(dy, bp, 1)
  return _matmul(dy, bp, True, blocks, poison)
