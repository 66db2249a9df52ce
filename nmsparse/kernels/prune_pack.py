"""``prune_pack``: one pass over the dense fp32 master weights -> both pruned operands + keep bits.

Backend: a Triton-lowered ``pallas_call`` (``compiler_params`` name Triton explicitly). The kernel
is an elementwise/bitwise pass over register tiles (strided views, a few in-register reshapes)
with no matrix units; Triton expresses that directly, while Mosaic GPU wants TMA/warpgroup-shaped
tiles and would gain nothing for a pass whose cost is loads, compares and selects. The same code
runs in the Pallas interpreter on CPU.

A weight ``W [R, O]`` (a dense kernel ``[K, O]``, or an HWIO conv kernel viewed as
``[kh*kw*C, O]``: ``C % M == 0`` keeps every FF group inside one ``(kh, kw)`` slice) is read once.
Each program ranks ``|W|`` inside every group of ``M`` rows (FF, ``M_ff``) and, for ``bdwp``/
``bimask``, inside every group of ``M`` columns (BP), with ``nm_mask``'s tie rule (lower index
wins). Like ``nm_mask`` it compares integer magnitude keys (the fp32 bits with the sign cleared),
not floats: float compares flush subnormals to zero on the GPU, integer compares are exact, so the
kernel's masks equal ``nm_mask``'s bit for bit. It writes, in the compute dtype:

* ``packed=True``: the FF operand packed along rows and the BP operand packed along columns
  (:mod:`nmsparse.pack` layout), for the value-serial matmuls;
* ``packed=False``: the masked dense operands ``W*M_ff`` and ``W*M_bp``, to feed XLA's dense dot
  or ``lax.conv`` (large batch, convolutions, ``srste``);

plus, in both cases, the per-group keep bitmap of ``M_ff`` (``G x O`` bytes) that the SR-STE term
``lam * (1 - M_ff) * W`` needs in the backward. Bytes: ``4`` read + ``2*2`` (masked) or
``~2*2*N/M*(1+bits/16)`` (packed) written per weight, + ``1/M`` for the bitmap.

Two variants, chosen per output kind from the measurements in ``benchmarks/README.md``:

* *reshape* (masked outputs, and bimask): ``[TG, M, TC]`` tiles; FF ranks across the ``M`` row
  planes, BP ranks inside an in-register ``[TG, TC/M, M]`` reshape of each plane. bimask needs
  ``M_ff`` before its column ranking, which this layout has at hand.
* *planes* (packed bdwp): the same tile read through two strided views, ``[Gq, q, M, O]`` for FF
  and ``[R, Hq, q, M]`` for BP, so that both rankings, the slot selection and the bit-packing of
  the positions are elementwise over ``16`` planes each, with no reshapes.

Shapes the tiles do not divide are zero-padded in the wrapper (a copy; model shapes need none).

A given ``source`` (a kernel snapshot, ``mask_every > 1``; SPEC §1) is read alongside ``W`` in the
same tiles: the rankings take ``|source|`` and the outputs carry ``W``'s values, so one pass still
writes both operands (reshape variant; ``4`` more bytes read per weight).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from nmsparse.kernels import backend
from nmsparse.pack import PackedNM, fields_per_byte, pack, pack_keep_bits, position_bits
from nmsparse.prune.methods import bp_mask, ff_mask
from nmsparse.types import BP_SPARSE_METHODS, SPARSE_METHODS, NMPattern, PatternLike

_POISON_INT = {1: 0xA5, 2: 0x5A}


class Pruned(NamedTuple):
  """``prune_pack``'s outputs: FF and BP operands (``PackedNM`` or masked dense) and M_ff bits."""

  ff: PackedNM | jax.Array
  bp: PackedNM | jax.Array | None  # None for srste (BP uses the FF mask: reuse ``ff``)
  ff_keep: jax.Array  # [G, O] per-group bitmap of M_ff (bit r = row g*M + r kept)


def _as_2d(w: jax.Array) -> jax.Array:
  return w.reshape(-1, w.shape[-1])


def _check(w: jax.Array, pattern: NMPattern, method: str, packed: bool, source=None):
  if source is not None and source.shape != w.shape:
    raise ValueError(f"prune_pack: source {source.shape} must be shaped like the weight {w.shape}.")
  if method not in SPARSE_METHODS:
    raise ValueError(f"prune_pack: method {method!r} has no pruned operands; expected one of "
                     f"{SPARSE_METHODS}.")
  m = pattern.m
  if m & (m - 1) or m > 8:
    raise ValueError(f"prune_pack: the Pallas kernel supports M in (2, 4, 8) (power-of-two "
                     f"Triton tiles, uint8 keep bits); got pattern {pattern}. Use "
                     "implementation='xla' for this layer.")
  cols = w.shape[-1]
  if w.shape[-2] % m:
    raise ValueError(f"prune_pack: input-channel axis of weight {w.shape} is not divisible by "
                     f"M={m} (pattern {pattern}).")
  if method in BP_SPARSE_METHODS and cols % m:
    raise ValueError(f"prune_pack: output-channel axis of weight {w.shape} is not divisible by "
                     f"M={m} (pattern {pattern}, method {method}).")
  if packed and method not in BP_SPARSE_METHODS:
    raise ValueError("prune_pack: srste's BP operand is W*M_ff, not N:M along output channels, so "
                     "it has no packed BP form; use packed=False.")


def reference_prune_pack(w: jax.Array, pattern: PatternLike, method: str = "bdwp", *,
                         dtype=jnp.bfloat16, packed: bool = True, poison: int = 0,
                         source: jax.Array | None = None) -> Pruned:
  """The jnp reference: ``nm_mask`` masks (of ``source`` when given), :func:`nmsparse.pack.pack`
  of ``w``'s values. ``poison`` is ignored."""
  del poison
  pattern = NMPattern.parse(pattern)
  _check(w, pattern, method, packed, source)
  w2 = _as_2d(w)
  s2 = w2 if source is None else _as_2d(source)
  m_ff = ff_mask(s2, pattern)
  m_bp = None if method == "srste" else bp_mask(s2, pattern, method)
  keep = pack_keep_bits(m_ff, pattern, axis=0)
  if packed:
    return Pruned(pack(w2, m_ff, pattern, 0, dtype), pack(w2, m_bp, pattern, 1, dtype), keep)
  masked = lambda m: jnp.where(m, w2, 0).astype(dtype).reshape(w.shape)
  return Pruned(masked(m_ff), None if m_bp is None else masked(m_bp), keep)


def _key(x):
  """``|x|`` of float32 ``x`` as an int32 that orders exactly (see ``nm_mask``'s magnitude_key)."""
  return lax.bitcast_convert_type(x, jnp.int32) & jnp.int32(0x7FFFFFFF)


def _rank_prev_next(planes, r):
  """Rank of plane ``r`` among ``planes`` (one group per element): how many beat it."""
  a = planes[r]
  rank = jnp.zeros(a.shape, jnp.int32)
  for s, b in enumerate(planes):
    if s != r:
      beats = (b >= a) if s < r else (b > a)
      rank += beats.astype(jnp.int32)
  return rank


def _rank_last(a):
  """Rank along the last axis (one group), ties to the lower index: ``nm_mask``'s rule."""
  m = a.shape[-1]
  ai, aj = a[..., :, None], a[..., None, :]
  earlier = jnp.arange(m)[None, :] < jnp.arange(m)[:, None]  # j < i
  beats = (aj > ai) | ((aj == ai) & earlier)
  return jnp.sum(beats.astype(jnp.int32), axis=-1)


def _exclusive_count_last(keep):
  """How many kept entries precede each entry along the last axis."""
  m = keep.shape[-1]
  before = jnp.arange(m)[None, :] < jnp.arange(m)[:, None]  # j < i
  return jnp.sum((keep[..., None, :] & before).astype(jnp.int32), axis=-1)


def _pack_fields(pos, bits, axis):
  """Little-endian bit-pack ``q`` consecutive fields along ``axis`` (already split off)."""
  q = pos.shape[axis]
  shape = [1] * pos.ndim
  shape[axis] = q
  shifts = (jnp.arange(q, dtype=jnp.int32) * bits).reshape(shape)
  return jnp.sum(pos << shifts, axis=axis).astype(jnp.uint8)


def _reshape_kernel(w_ref, *refs, pattern: NMPattern, method: str, packed: bool, dtype,
                    groups: int, col_groups: int, n_out: int, has_source: bool):
  n, m = pattern.n, pattern.m
  outs = refs[-n_out:]
  s_ref = refs[0] if has_source else w_ref  # what the rankings read
  tg, _, tc = w_ref.shape
  th = tc // m
  gi, ci = pl.program_id(0), pl.program_id(1)
  row_ok = (gi * tg + jnp.arange(tg) < groups)[:, None]  # [TG, 1] real FF groups
  col_ok = (ci * th + jnp.arange(th) < col_groups)[None, :, None]  # [1, TH, 1] real BP groups

  w = [w_ref[:, r, :] for r in range(m)]  # M planes [TG, TC]: row g*M + r of the tile
  s = [s_ref[:, r, :] for r in range(m)] if has_source else w
  mag = [_key(p) for p in s]
  keep_ff = [(_rank_prev_next(mag, r) < n) & row_ok for r in range(m)]
  keep_bits = functools.reduce(
      lambda acc, r: acc | (keep_ff[r].astype(jnp.int32) << r), range(m), jnp.zeros((tg, tc),
                                                                                    jnp.int32))

  keep_bp = []
  if method in BP_SPARSE_METHODS:
    for r in range(m):
      src = s[r] if method == "bdwp" else jnp.where(keep_ff[r], s[r], 0.0)
      k3 = _rank_last(_key(src).reshape(tg, th, m)) < n
      if method == "bimask":
        k3 &= keep_ff[r].reshape(tg, th, m)
      keep_bp.append(k3 & col_ok)

  zero = jnp.zeros((), dtype)
  if not packed:
    ff_ref, *rest = outs
    for r in range(m):
      ff_ref[:, r, :] = jnp.where(keep_ff[r], w[r].astype(dtype), zero)
    if method in BP_SPARSE_METHODS:
      bp_ref = rest[0]
      for r in range(m):
        bp_ref[:, r, :] = jnp.where(keep_bp[r].reshape(tg, tc), w[r].astype(dtype), zero)
    rest[-1][...] = keep_bits.astype(rest[-1].dtype)
    return

  ffv_ref, ffp_ref, bpv_ref, bpp_ref, kb_ref = outs
  bits, q = position_bits(m), fields_per_byte(m)
  # FF: slot j of group g is the j-th kept row (ascending r).
  slot, count = [], jnp.zeros((tg, tc), jnp.int32)
  for r in range(m):
    slot.append(count)
    count = count + keep_ff[r].astype(jnp.int32)
  for j in range(n):
    val = jnp.zeros((tg, tc), dtype)
    pos = jnp.zeros((tg, tc), jnp.int32)
    for r in reversed(range(m)):
      sel = keep_ff[r] & (slot[r] == j)
      val = jnp.where(sel, w[r].astype(dtype), val)
      pos = jnp.where(sel, r, pos)
    ffv_ref[j] = val
    ffp_ref[j] = _pack_fields(pos.reshape(tg // q, q, tc), bits, 1)
  # BP: per row, slot j of column group h is the j-th kept column (ascending c).
  cidx = jnp.arange(m, dtype=jnp.int32)[None, None, :]
  for r in range(m):
    w3 = w[r].astype(dtype).reshape(tg, th, m)
    k3 = keep_bp[r]
    s3 = _exclusive_count_last(k3)
    for j in range(n):
      sel = k3 & (s3 == j)
      bpv_ref[:, r, j, :] = jnp.sum(jnp.where(sel, w3, zero).astype(jnp.float32),
                                    axis=-1).astype(dtype)
      pos = jnp.sum(jnp.where(sel, cidx, 0), axis=-1)  # [TG, TH]
      bpp_ref[:, r, j, :] = _pack_fields(pos.reshape(tg, th // q, q), bits, 2)
  kb_ref[...] = keep_bits.astype(kb_ref.dtype)


def _tiles(groups: int, cols: int, m: int) -> tuple[int, int]:
  tc = 128 if cols >= 128 else max(16, pl.next_power_of_2(cols))
  tg = max(fields_per_byte(m), 4096 // (m * tc))
  tg = min(tg, max(fields_per_byte(m), pl.next_power_of_2(groups)))
  return tg, tc


def _planes_kernel(a_ref, b_ref, ffv_ref, ffp_ref, bpv_ref, bpp_ref, kb_ref, *,
                   pattern: NMPattern, dtype, groups: int, col_groups: int):
  """Packed bdwp: both rankings elementwise over planes of two strided views of one tile."""
  n, m = pattern.n, pattern.m
  bits, q = position_bits(m), fields_per_byte(m)
  tgq, _, _, tc = a_ref.shape  # A view [Gq, q, M, O]: plane (t, r) = rows (g*q + t)*M + r
  tr, thq, _, _ = b_ref.shape  # B view [R, Hq, q, M]: plane (u, c) = cols (h*q + u)*M + c
  gi, ci = pl.program_id(0), pl.program_id(1)
  g0 = (gi * tgq + jnp.arange(tgq)) * q
  a = [[a_ref[:, t, r, :] for r in range(m)] for t in range(q)]
  keep_ff = []
  for t in range(q):
    mag = [_key(p) for p in a[t]]
    ok = (g0 + t < groups)[:, None]
    keep_ff.append([(_rank_prev_next(mag, r) < n) & ok for r in range(m)])
    bitmap = jnp.zeros((tgq, tc), jnp.int32)
    for r in range(m):
      bitmap = bitmap | (keep_ff[t][r].astype(jnp.int32) << r)
    kb_ref[:, t, :] = bitmap.astype(kb_ref.dtype)
  for j, (val, pos) in enumerate(_slots(a, keep_ff, n, dtype)):
    ffp = jnp.zeros((tgq, tc), jnp.int32)
    for t in range(q):
      ffv_ref[j, :, t, :] = val[t]
      ffp = ffp | (pos[t] << (bits * t))
    ffp_ref[j] = ffp.astype(jnp.uint8)
  h0 = (ci * thq + jnp.arange(thq)) * q
  b = [[b_ref[:, :, u, c] for c in range(m)] for u in range(q)]
  keep_bp = []
  for u in range(q):
    mag = [_key(p) for p in b[u]]
    ok = (h0 + u < col_groups)[None, :]
    keep_bp.append([(_rank_prev_next(mag, c) < n) & ok for c in range(m)])
  for j, (val, pos) in enumerate(_slots(b, keep_bp, n, dtype)):
    bpp = jnp.zeros((tr, thq), jnp.int32)
    for u in range(q):
      bpv_ref[:, j, :, u] = val[u]
      bpp = bpp | (pos[u] << (bits * u))
    bpp_ref[:, j, :] = bpp.astype(jnp.uint8)


def _slots(planes, keep, n: int, dtype):
  """Per slot ``j``: (values, positions) planes, for each field, of the j-th kept entry."""
  out = [([], []) for _ in range(n)]
  for field_planes, field_keep in zip(planes, keep):
    count = jnp.zeros(field_planes[0].shape, jnp.int32)
    slot = []
    for k in field_keep:
      slot.append(count)
      count = count + k.astype(jnp.int32)
    for j in range(n):
      val = jnp.zeros(field_planes[0].shape, dtype)
      pos = jnp.zeros(field_planes[0].shape, jnp.int32)
      for r in reversed(range(len(field_planes))):
        sel = field_keep[r] & (slot[r] == j)
        val = jnp.where(sel, field_planes[r].astype(dtype), val)
        pos = jnp.where(sel, r, pos)
      out[j][0].append(val)
      out[j][1].append(pos)
  return out


def _prune_planes(w: jax.Array, pattern: NMPattern, dtype, poison: int) -> Pruned:
  """The plane-wise variant: packed bdwp operands."""
  n, m = pattern.n, pattern.m
  q = fields_per_byte(m)  # q * m == 16 for every supported M
  w2 = _as_2d(w).astype(jnp.float32)
  rows, cols = w2.shape
  groups, col_groups = rows // m, cols // m
  thq = 8 if cols >= 128 else pl.next_power_of_2(-(-cols // 16))
  tgq = max(1, min(16 // thq, pl.next_power_of_2(-(-groups // q))))
  tr, tc = tgq * q * m, thq * q * m
  rpad, opad = -(-rows // tr) * tr, -(-cols // tc) * tc
  if (rpad, opad) != (rows, cols):
    w2 = jnp.pad(w2, ((0, rpad - rows), (0, opad - cols)))
  gqp, hqp = rpad // (q * m), opad // (q * m)
  grid = (rpad // tr, opad // tc)
  a_spec = pl.BlockSpec((tgq, q, m, tc), lambda i, c: (i, 0, 0, c))
  b_spec = pl.BlockSpec((tr, thq, q, m), lambda i, c: (i, c, 0, 0))
  kb = (jax.ShapeDtypeStruct((gqp, q, opad), jnp.uint8),
        pl.BlockSpec((tgq, q, tc), lambda i, c: (i, 0, c)))
  outs = [
      (jax.ShapeDtypeStruct((n, gqp, q, opad), dtype),
       pl.BlockSpec((n, tgq, q, tc), lambda i, c: (0, i, 0, c))),
      (jax.ShapeDtypeStruct((n, gqp, opad), jnp.uint8),
       pl.BlockSpec((n, tgq, tc), lambda i, c: (0, i, c))),
      (jax.ShapeDtypeStruct((rpad, n, hqp, q), dtype),
       pl.BlockSpec((tr, n, thq, q), lambda i, c: (i, 0, c, 0))),
      (jax.ShapeDtypeStruct((rpad, n, hqp), jnp.uint8),
       pl.BlockSpec((tr, n, thq), lambda i, c: (i, 0, c))),
      kb]
  args = [w2.reshape(gqp, q, m, opad), w2.reshape(rpad, hqp, q, m)]
  in_specs = [a_spec, b_spec]
  aliases = {}
  if poison:
    for k, (s, spec) in enumerate(outs):
      fill = jnp.nan if jnp.issubdtype(s.dtype, jnp.floating) else _POISON_INT[poison]
      aliases[len(args)] = k
      args.append(jnp.full(s.shape, fill, s.dtype))
      in_specs.append(spec)
  def kernel(*refs):  # inputs (A view, B view, poison buffers), then the outputs
    _planes_kernel(*refs[:2], *refs[-len(outs):], pattern=pattern, dtype=dtype, groups=groups,
                   col_groups=col_groups)

  res = pl.pallas_call(kernel, out_shape=[o[0] for o in outs], grid=grid, in_specs=in_specs,
                       out_specs=[o[1] for o in outs], input_output_aliases=aliases,
                       name=f"prune_pack_packed_{n}of{m}",
                       **backend.call_kwargs(num_warps=4, num_stages=1))(*args)
  keep = res[-1].reshape(gqp * q, opad)[:groups, :cols]
  ffv, ffp, bpv, bpp, _ = res
  gq, hq = -(-groups // q), -(-col_groups // q)
  ff = PackedNM(ffv.reshape(n, gqp * q, opad)[:, :gq * q, :cols], ffp[:, :gq, :cols], pattern, 0,
                rows)
  bp = PackedNM(bpv.reshape(rpad, n, hqp * q)[:rows, :, :hq * q], bpp[:rows, :, :hq], pattern, 1,
                cols)
  return Pruned(ff, bp, keep)


def prune_pack(w: jax.Array, pattern: PatternLike, method: str = "bdwp", *, dtype=jnp.bfloat16,
               packed: bool = True, poison: int = 0, source: jax.Array | None = None) -> Pruned:
  """Prunes ``w`` for FF and BP in one pass and writes the operands in ``dtype``.

  Args:
    w: dense master weights, ``[K, O]`` or HWIO ``[kh, kw, C, O]``.
    pattern: N:M pattern (M in 2, 4, 8).
    method: ``srste``, ``bdwp`` or ``bimask`` (which BP mask; SPEC §1).
    dtype: compute dtype of the operands.
    packed: write packed operands (FF along rows, BP along columns of the ``[R, O]`` view) instead
      of masked dense ones (shaped like ``w``).
    poison: test hook; 1 or 2 pre-fill the outputs with NaN / a byte pattern so that any element
      the kernel fails to write shows.
    source: a weight-shaped array whose magnitudes the masks rank instead of ``w``'s (a kernel
      snapshot, ``mask_every > 1``); the operands still carry ``w``'s values. Runs the reshape
      variant (packed bdwp included).

  Returns:
    :class:`Pruned`. Packed operands describe the 2-D view ``[R, O]`` (``R = K`` or
    ``kh*kw*C``).
  """
  pattern = NMPattern.parse(pattern)
  _check(w, pattern, method, packed, source)
  if packed and method == "bdwp" and source is None:
    return _prune_planes(w, pattern, dtype, poison)
  return _prune_reshape(w, pattern, method, dtype=dtype, packed=packed, poison=poison,
                        source=source)


def _prune_reshape(w: jax.Array, pattern: NMPattern, method: str, *, dtype, packed: bool,
                   poison: int, source: jax.Array | None = None) -> Pruned:
  """The reshape variant: any method and output kind (used for masked outputs and bimask)."""
  n, m = pattern.n, pattern.m
  rows, cols = w.size // w.shape[-1], w.shape[-1]  # the [R, O] view's (no reshape traced)
  groups, col_groups = rows // m, cols // m
  tg, tc = _tiles(groups, cols, m)
  gpad, opad = -(-groups // tg) * tg, -(-cols // tc) * tc

  def tiled(a):  # [R, O] fp32, zero-padded to the tiles, as [G, M, O]
    a = _as_2d(a).astype(jnp.float32)
    if (gpad * m, opad) != (rows, cols):
      a = jnp.pad(a, ((0, gpad * m - rows), (0, opad - cols)))
    return a.reshape(gpad, m, opad)
  q = fields_per_byte(m)
  kdt = jnp.uint8
  grid = (gpad // tg, opad // tc)
  tile = lambda i, c: (i, 0, c)
  if packed:
    hpad = opad // m
    out_shape = (
        jax.ShapeDtypeStruct((n, gpad, opad), dtype),
        jax.ShapeDtypeStruct((n, gpad // q, opad), jnp.uint8),
        jax.ShapeDtypeStruct((gpad, m, n, hpad), dtype),
        jax.ShapeDtypeStruct((gpad, m, n, hpad // q), jnp.uint8),
        jax.ShapeDtypeStruct((gpad, opad), kdt),
    )
    out_specs = (
        pl.BlockSpec((n, tg, tc), lambda i, c: (0, i, c)),
        pl.BlockSpec((n, tg // q, tc), lambda i, c: (0, i, c)),
        pl.BlockSpec((tg, m, n, tc // m), lambda i, c: (i, 0, 0, c)),
        pl.BlockSpec((tg, m, n, tc // m // q), lambda i, c: (i, 0, 0, c)),
        pl.BlockSpec((tg, tc), lambda i, c: (i, c)),
    )
  else:
    dense = jax.ShapeDtypeStruct((gpad, m, opad), dtype)
    out_shape = (dense,) + ((dense,) if method in BP_SPARSE_METHODS else ()) + (
        jax.ShapeDtypeStruct((gpad, opad), kdt),)
    out_specs = (pl.BlockSpec((tg, m, tc), tile),) * (len(out_shape) - 1) + (
        pl.BlockSpec((tg, tc), lambda i, c: (i, c)),)
  args = [tiled(w)] + ([] if source is None else [tiled(source)])
  in_specs = [pl.BlockSpec((tg, m, tc), tile)] * len(args)
  aliases = {}
  if poison:
    for k, (s, spec) in enumerate(zip(out_shape, out_specs)):
      fill = jnp.nan if jnp.issubdtype(s.dtype, jnp.floating) else _POISON_INT[poison]
      args.append(jnp.full(s.shape, fill, s.dtype))
      in_specs.append(spec)
      aliases[len(args) - 1] = k
  kernel = functools.partial(_reshape_kernel, pattern=pattern, method=method, packed=packed,
                             dtype=dtype, groups=groups, col_groups=col_groups,
                             n_out=len(out_shape), has_source=source is not None)
  outs = pl.pallas_call(kernel, out_shape=out_shape, grid=grid, in_specs=in_specs,
                        out_specs=out_specs, input_output_aliases=aliases,
                        name=f"prune_pack_{'packed' if packed else 'masked'}",
                        **backend.call_kwargs(num_warps=4, num_stages=1))(*args)
  keep = outs[-1][:groups, :cols]
  if not packed:
    unpad = lambda a: a.reshape(gpad * m, opad)[:rows, :cols].reshape(w.shape)
    return Pruned(unpad(outs[0]), unpad(outs[1]) if method in BP_SPARSE_METHODS else None, keep)
  ffv, ffp, bpv, bpp, _ = outs
  gq, hq = -(-groups // q), -(-col_groups // q)
  ff = PackedNM(ffv[:, :gq * q, :cols], ffp[:, :gq, :cols], pattern, 0, rows)
  bpv = bpv.reshape(gpad * m, n, hpad)[:rows, :, :hq * q]
  bpp = bpp.reshape(gpad * m, n, hpad // q)[:rows, :, :hq]
  return Pruned(ff, PackedNM(bpv, bpp, pattern, 1, cols), keep)
