"""Value-serial N:M matmuls on packed operands: ``y = x @ unpack(W_ff)``, ``dx = dy @ unpack(W_bp)^T``.

Backend: a Triton-lowered ``pallas_call`` (``compiler_params`` name Triton explicitly). The kernel
decodes bit fields and selects values per element in registers, then feeds ``16 x R x 128`` tiles
to the tensor cores: small-M dots at any batch size, which Triton schedules itself, whereas Mosaic
GPU's warpgroup MMA wants 64-row tiles and TMA-described shared-memory layouts that the decoded
operand does not come in. The same code runs in the Pallas interpreter on CPU.

Only packed operands are read: per group of ``M`` weights, ``N`` values and ``N`` bit-packed
positions (:mod:`nmsparse.pack`). The activation is reordered in the wrapper (one small XLA copy,
cheap at the small batches this kernel is for) into ``xr[t, r, b, i] = x[b, (i*q + t)*M + r]``, so
that the operand never has to be re-interleaved: for each byte row ``i`` and field ``t`` the kernel
rebuilds the ``M`` planes ``D_r[i, o] = sum_j [pos_j == r] * v_j`` (``N`` selects each) and adds
``xr[t, r] @ D_r``. Per group of ``M`` it moves ``N*(itemsize + bits/8)`` bytes instead of ``M *
itemsize``. The reduction is split over programs when the output alone gives too few of them (small
batch), and the partial sums are added in the wrapper.

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

_SMS = 132  # H100 SXM multiprocessors: the split heuristic aims at two programs per SM


@dataclasses.dataclass(frozen=True)
class MatmulBlocks:
  """Tile sizes: ``bb`` batch rows, ``bo`` output columns, ``rows`` packed byte rows per step,
  ``splits`` programs sharing one output tile's reduction (``None``: heuristic)."""

  bb: int = 16
  bo: int = 128
  rows: int = 32
  splits: int | None = None
  num_warps: int = 4
  num_stages: int = 2


def default_blocks(batch: int, out_cols: int) -> MatmulBlocks:
  bb = 16 if batch <= 16 else 32 if batch <= 32 else 64
  bo = 128 if out_cols >= 128 else max(16, pl.next_power_of_2(out_cols))
  return MatmulBlocks(bb=bb, bo=bo)


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


def _reorder(x: jax.Array, p: PackedNM, bb: int, gq_pad: int) -> jax.Array:
  """``[B, L] -> [q, M, Bp, Gq_pad]`` with ``xr[t, r, b, i] = x[b, (i*q + t)*M + r]``."""
  m, q = p.pattern.m, fields_per_byte(p.pattern.m)
  b, length = x.shape
  bp = -(-b // bb) * bb
  x = jnp.pad(x, ((0, bp - b), (0, gq_pad * q * m - length)))
  return x.reshape(bp, gq_pad, q, m).transpose(2, 3, 0, 1)


def _kernel(x_ref, v_ref, p_ref, *refs, n: int, m: int, transpose: bool, rows: int, bb: int,
            bt: int, steps: int, precision):
  out_ref = refs[-1]
  bits, q = position_bits(m), fields_per_byte(m)
  field_mask = (1 << bits) - 1
  col, row_blk, split = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  b0 = row_blk * bb
  c0 = col * bt

  def step(it, acc):
    i0 = pl.multiple_of((split * steps + it) * rows, rows)
    if transpose:  # operand [K, N, Gq, q]: tiles [bt (K), rows (byte rows)]
      pos = [p_ref[pl.ds(c0, bt), j, pl.ds(i0, rows)].astype(jnp.int32) for j in range(n)]
    else:  # operand [N, Gq, q, O]: tiles [rows, bt (O)]
      pos = [p_ref[j, pl.ds(i0, rows), pl.ds(c0, bt)].astype(jnp.int32) for j in range(n)]
    for t in range(q):
      if transpose:
        val = [v_ref[pl.ds(c0, bt), j, pl.ds(i0, rows), t] for j in range(n)]
      else:
        val = [v_ref[j, pl.ds(i0, rows), t, pl.ds(c0, bt)] for j in range(n)]
      field = [(pj >> (bits * t)) & field_mask for pj in pos]
      zero = jnp.zeros((), val[0].dtype)
      for r in range(m):
        plane = zero
        for j in reversed(range(n)):
          plane = jnp.where(field[j] == r, val[j], plane)
        xs = x_ref[t, r, pl.ds(b0, bb), pl.ds(i0, rows)]
        dims = (((1,), (1,)), ((), ())) if transpose else (((1,), (0,)), ((), ()))
        acc += lax.dot_general(xs, plane, dims, precision=precision,
                               preferred_element_type=jnp.float32)
    return acc

  acc = lax.fori_loop(0, steps, step, jnp.zeros((bb, bt), jnp.float32))
  out_ref[...] = acc.astype(out_ref.dtype)


def _matmul(x: jax.Array, p: PackedNM, transpose: bool, blocks: MatmulBlocks | None,
            poison: int) -> jax.Array:
  n, m = p.pattern.n, p.pattern.m
  q = fields_per_byte(m)
  batch = x.shape[0]
  red_axis = 1 if transpose else 0
  out_cols = p.shape[1 - red_axis]
  blocks = blocks or default_blocks(batch, out_cols)
  bb, bt, rows = blocks.bb, blocks.bo, blocks.rows
  gq = p.positions.shape[-1] if transpose else p.positions.shape[1]
  gq_pad = -(-gq // rows) * rows
  cols_pad = -(-out_cols // bt) * bt
  xr = _reorder(x, p, bb, gq_pad)
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
  n_cols, n_rows = cols_pad // bt, xr.shape[2] // bb
  splits = blocks.splits
  if splits is None:
    want = max(1, 2 * _SMS // (n_cols * n_rows))
    splits = max(d for d in range(1, total_steps + 1) if total_steps % d == 0 and d <= want)
  if total_steps % splits:
    raise ValueError(f"splits={splits} must divide the {total_steps} reduction steps.")
  out_dtype = x.dtype if splits == 1 else jnp.float32
  out_shape = jax.ShapeDtypeStruct((splits, xr.shape[2], cols_pad), out_dtype)
  out_spec = pl.BlockSpec((None, bb, bt), lambda c, b, s: (s, b, c))
  in_specs = [pl.no_block_spec] * 3
  args = [xr, values, positions]
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
  y = out[0] if splits == 1 else jnp.sum(out, axis=0)
  return y[:batch, :out_cols].astype(x.dtype)


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
