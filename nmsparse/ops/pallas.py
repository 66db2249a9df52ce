"""The ``"pallas"`` implementation: one fused prune pass per step, packed matmuls at small batch.

Same four functions as :mod:`nmsparse.ops.xla` (see its docstring for the contract). Every forward
runs :func:`nmsparse.kernels.prune_pack` once: it reads the dense fp32 master weight once and writes
both pruned operands in the compute dtype plus the ``M_ff`` keep bitmap for the SR-STE term. What
it writes, and what consumes it, follows this dispatch rule:

* **dense, small batch** (``rows of x <= PACKED_MAX_BATCH``, method ``bdwp``/``bimask``): the
  operands are *packed* (:mod:`nmsparse.pack`); ``y = nm_matmul(x, W_ff)`` and, in the backward,
  ``dx = nm_matmul_t(dy, W_bp)`` read only ``N/M`` of the values plus bit-packed positions. These
  products are memory-bound, so fewer weight bytes is the whole gain. ``aux`` = packed BP operand
  (0.31-0.56 of the bf16 weight) and the keep bitmap.
* **dense, large batch, and ``srste``** (whose BP operand ``W*M_ff`` is not N:M along the BP
  reduction axis): the operands are written *masked and dense* in the compute dtype and feed XLA's
  dense dot (cuBLAS). At large batch the products are compute-bound and a decompress-in-kernel
  MMA does the same FLOPs as cuBLAS with a slower main loop (without sparse tensor cores there is
  no FLOP saving to collect). ``aux`` = masked BP operand and the keep bitmap.
* **conv**: masked operands feeding ``lax.conv`` (one prune pass instead of two mask passes).

The weight gradient is always XLA's dense dot/conv, plus ``lam * (1 - M_ff) * W`` from the bitmap.
``PACKED_MAX_BATCH = 16`` comes from ``benchmarks/`` (H100, 4096x4096, 2:8): the packed forward
ran 1.01-1.06x dense ``jnp.dot`` at batch 8-16 and 0.81x at 64, 0.29x at 256 (its tensor-core
tiles are 16 rows and the decode is redone per batch tile). Patterns need ``M in (2, 4, 8)``; other
patterns raise ``ValueError`` (use ``implementation="xla"``), never a silent fallback.

**A given mask source** (``mask_every > 1``; ``dense_src_*``/``conv_src_*``): the fused prune
kernel ranks the weight it prunes, but here the masks come from a kernel snapshot and the operands
from the current weight. These four functions are :mod:`nmsparse.ops.xla`'s: masks from ``nm_mask``
of the source, masked operands built with ``jnp`` (select + cast) feeding XLA's dots/convs. They
take any pattern.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmsparse.kernels import nm_matmul, nm_matmul_t, prune_pack
from nmsparse.ops import xla
from nmsparse.ops.config import ConvDims, NMConfig
from nmsparse.pack import PackedNM, unpack_keep_bits
from nmsparse.prune.methods import sr_ste_decay

PACKED_MAX_BATCH = 16


def use_packed(batch: int, cfg: NMConfig) -> bool:
  """Whether a dense layer with ``batch`` rows takes the packed (value-serial) path."""
  return cfg.method in ("bdwp", "bimask") and batch <= PACKED_MAX_BATCH


def _decay(w: jax.Array, keep_bits: jax.Array, cfg: NMConfig) -> jax.Array:
  if not cfg.sr_ste_lambda:
    return jnp.zeros((), w.dtype)
  m_ff = unpack_keep_bits(keep_bits, cfg.pattern, axis=0).reshape(w.shape)
  return sr_ste_decay(w, m_ff, cfg.sr_ste_lambda)


def dense_fwd(x: jax.Array, w: jax.Array, *, cfg: NMConfig):
  if use_packed(x.shape[0], cfg):
    ff, bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=True)
    return nm_matmul(x, ff), (bp.values, bp.positions, keep)
  w_ff, w_bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=False)
  y = jnp.dot(x, w_ff, preferred_element_type=jnp.float32).astype(x.dtype)
  return y, (w_ff if w_bp is None else w_bp, keep)


def dense_bwd(x: jax.Array, w: jax.Array, dy: jax.Array, *aux: jax.Array, cfg: NMConfig):
  if len(aux) == 3:  # packed path (see dense_fwd)
    values, positions, keep = aux
    dx = nm_matmul_t(dy, PackedNM(values, positions, cfg.pattern, 1, w.shape[1]))
  else:
    w_bp, keep = aux
    dx = jnp.dot(dy, w_bp.T, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.dot(x.T, dy, preferred_element_type=jnp.float32).astype(w.dtype)
  return dx, dw + _decay(w, keep, cfg)


def conv_fwd(x: jax.Array, w: jax.Array, *, cfg: NMConfig, geom: ConvDims):
  w_ff, w_bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=False)
  return geom.conv(x, w_ff), (w_ff if w_bp is None else w_bp, keep)


def conv_bwd(x: jax.Array, w: jax.Array, dy: jax.Array, w_bp: jax.Array, keep: jax.Array, *,
             cfg: NMConfig, geom: ConvDims):
  (dx,) = jax.linear_transpose(lambda x_: geom.conv(x_, w_bp), x)(dy)
  w_c = jax.ShapeDtypeStruct(w.shape, x.dtype)
  (dw,) = jax.linear_transpose(lambda w_: geom.conv(x, w_), w_c)(dy)
  return dx, dw.astype(w.dtype) + _decay(w, keep, cfg)


# A given mask source: the xla implementation's masked operands (see the module docstring).
dense_src_fwd = xla.dense_src_fwd
dense_src_bwd = xla.dense_src_bwd
conv_src_fwd = xla.conv_src_fwd
conv_src_bwd = xla.conv_src_bwd
