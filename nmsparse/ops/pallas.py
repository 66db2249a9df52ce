"""The ``"pallas"`` implementation: one fused prune pass per step, packed matmuls at small batch.

Every forward runs :func:`nmsparse.kernels.prune_pack` once: it reads the dense master weight once
and writes both pruned operands in the compute dtype plus the ``M_ff`` keep bitmap for the SR-STE
term. What it writes, and what consumes it, follows this dispatch rule:

* **dense, at most ``packed_max_batch()`` rows, method in ``BP_SPARSE_METHODS``**: the operands are
  *packed* (:mod:`nmsparse.pack`); ``y = nm_matmul(x, W_ff)`` and, in the backward,
  ``dx = nm_matmul_t(dy, W_bp)`` read only ``N/M`` of the values plus bit-packed positions.
* **dense with more rows, and ``srste``** (whose BP operand ``W*M_ff`` is not N:M along the BP
  reduction axis): the operands are written *masked and dense* and feed XLA's dense dot.
* **conv**: masked operands feeding ``lax.conv`` (one prune pass instead of two mask passes).

The weight gradient is always XLA's dense dot/conv, plus ``lam * (1 - M_ff) * W`` from the bitmap.
The batch limit is the card's measured one (:func:`packed_max_batch`; 0 on an H200, where the
packed products lost to dense at every batch). Patterns need
``M in (2, 4, 8)`` (``supports`` says so for others).

**A given mask source** (``cfg.given_mask_source``, ``mask_every > 1``): the masks come from a
kernel snapshot and the operands from the current weight. Where the card's rule says so
(``CardRule.fused_mask_source``, :func:`fuses_mask_source`) and ``M in (2, 4, 8)``, the prune pass
reads both and ranks the snapshot (``prune_pack(..., source=)``); otherwise the four functions run
:mod:`nmsparse.ops.xla`'s (any pattern). No card's rule has it yet: the pass is bit-exact in the
Pallas interpreter but has not been compiled and timed on a GPU.

**bimask** runs here only as a dense layer without a permutation (the identity order): the fused
kernel ranks BP groups in the stored output order and FF groups per conv tap, so ``supports``
refuses a permuted backward mask and bimask's flattened ``(C, kh, kw)`` conv groups.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nmsparse.kernels import nm_matmul, nm_matmul_t, prune_pack
from nmsparse.ops import xla
from nmsparse.ops.cards import DEFAULT, card_rule
from nmsparse.ops.config import ConvDims, LayerSpec, NMConfig
from nmsparse.ops.impl import Implementation
from nmsparse.pack import PackedNM, unpack_keep_bits
from nmsparse.prune.methods import sr_ste_decay
from nmsparse.types import BP_SPARSE_METHODS

PACKED_MAX_BATCH = DEFAULT.packed_max_batch  # off-GPU and on cards without measurements
KERNEL_M = (2, 4, 8)


class Residuals(NamedTuple):
  """What the forward's prune pass leaves for the backward (zero-size where a path has none).

  Attributes:
    bp: the BP operand: packed values (packed path) or ``W * M_bp`` masked dense.
    bp_positions: the packed BP operand's bit-packed positions; zero-size on the masked path.
    ff_keep: the per-group keep bitmap of ``M_ff`` (SR-STE term).
  """

  bp: jax.Array
  bp_positions: jax.Array
  ff_keep: jax.Array


def _none() -> jax.Array:
  return jnp.zeros((0,), jnp.uint8)


def packed_max_batch() -> int:
  """The largest batch that takes the packed path here: this card's measured value
  (:mod:`nmsparse.ops.cards`), or ``PACKED_MAX_BATCH`` off-GPU and on unmeasured cards."""
  return card_rule().packed_max_batch


def use_packed(batch: int, cfg: NMConfig) -> bool:
  """Whether a dense layer with ``batch`` rows takes the packed (value-serial) path."""
  return cfg.method in BP_SPARSE_METHODS and batch <= packed_max_batch()


def fuses_mask_source(cfg: NMConfig) -> bool:
  """Whether a given mask source takes the fused prune pass here (module docstring)."""
  return cfg.pattern.m in KERNEL_M and card_rule().fused_mask_source


def _xla_path(cfg: NMConfig) -> bool:
  return cfg.given_mask_source and not fuses_mask_source(cfg)


def _forward_ran_xla(res: Residuals, cfg: NMConfig) -> bool:
  """The backward follows the forward's path, read off its residuals (empty on the xla path), not
  the card rule again, which a trace of the pullback outside an ``overridden`` block would change."""
  return cfg.given_mask_source and not res.bp.size


def _source(src: jax.Array, cfg: NMConfig) -> jax.Array | None:
  return src if cfg.given_mask_source else None


def _decay(w: jax.Array, keep_bits: jax.Array, cfg: NMConfig) -> jax.Array:
  if not cfg.sr_ste_lambda:
    return jnp.zeros((), w.dtype)
  m_ff = unpack_keep_bits(keep_bits, cfg.pattern, axis=0).reshape(w.shape)
  return sr_ste_decay(w, m_ff, cfg.sr_ste_lambda)


def dense_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *,
              cfg: NMConfig) -> tuple[jax.Array, Residuals]:
  """``x @ (W * M_ff)`` from one prune pass: packed matmul or XLA dot (module docstring)."""
  if _xla_path(cfg):
    return xla.dense_fwd(x, w, src, cfg=cfg)[0], Residuals(_none(), _none(), _none())
  if use_packed(x.shape[0], cfg):
    ff, bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=True,
                              source=_source(src, cfg))
    return nm_matmul(x, ff), Residuals(bp.values, bp.positions, keep)
  w_ff, w_bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=False,
                                source=_source(src, cfg))
  y = jnp.dot(x, w_ff, preferred_element_type=jnp.float32).astype(x.dtype)
  return y, Residuals(w_ff if w_bp is None else w_bp, _none(), keep)


def dense_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
              cfg: NMConfig) -> tuple[jax.Array, jax.Array]:
  """``dy @ (W * M_bp)^T`` from the forward's BP operand and ``x^T dy`` plus SR-STE."""
  if _forward_ran_xla(res, cfg):
    return xla.dense_bwd(x, w, src, dy, xla.Residuals(), cfg=cfg)
  if res.bp_positions.size:
    dx = nm_matmul_t(dy, PackedNM(res.bp, res.bp_positions, cfg.pattern, 1, w.shape[1]))
  else:
    dx = jnp.dot(dy, res.bp.T, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.dot(x.T, dy, preferred_element_type=jnp.float32).astype(w.dtype)
  return dx, dw + _decay(w, res.ff_keep, cfg)


def conv_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig,
             geom: ConvDims) -> tuple[jax.Array, Residuals]:
  """The convolution with the prune pass's masked ``W * M_ff``."""
  if _xla_path(cfg):
    return xla.conv_fwd(x, w, src, cfg=cfg, geom=geom)[0], Residuals(_none(), _none(), _none())
  w_ff, w_bp, keep = prune_pack(w, cfg.pattern, cfg.method, dtype=x.dtype, packed=False,
                                source=_source(src, cfg))
  return geom.conv(x, w_ff), Residuals(w_ff if w_bp is None else w_bp, _none(), keep)


def conv_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
             cfg: NMConfig, geom: ConvDims) -> tuple[jax.Array, jax.Array]:
  """The transposed convolution with the forward's ``W * M_bp`` and the weight gradient."""
  if _forward_ran_xla(res, cfg):
    return xla.conv_bwd(x, w, src, dy, xla.Residuals(), cfg=cfg, geom=geom)
  (dx,) = jax.linear_transpose(lambda x_: geom.conv(x_, res.bp), x)(dy)
  w_c = jax.ShapeDtypeStruct(w.shape, x.dtype)
  (dw,) = jax.linear_transpose(lambda w_: geom.conv(x, w_), w_c)(dy)
  return dx, dw.astype(w.dtype) + _decay(w, res.ff_keep, cfg)


def supports(layer: LayerSpec) -> str | None:
  """The kernels take ``M in (2, 4, 8)``; a given mask source runs the xla functions (any M);
  bimask only as a dense layer without a permutation (module docstring)."""
  if layer.method == "bimask" and (layer.given_permutation or layer.op == "conv"):
    what = "a permuted backward mask" if layer.given_permutation else "conv groups along (C, kh, kw)"
    return (f"the fused prune kernel cannot compute bimask's {what}; use implementation='xla' "
            f"for this layer")
  if layer.given_mask_source or layer.pattern.m in KERNEL_M:
    return None
  return (f"the Pallas kernels support M in {KERNEL_M} (power-of-two Triton tiles, uint8 keep "
          f"bits), not pattern {layer.pattern}; use implementation='xla' for this layer")


IMPLEMENTATION = Implementation(name="pallas", dense_fwd=dense_fwd, dense_bwd=dense_bwd,
                                conv_fwd=conv_fwd, conv_bwd=conv_bwd, supports=supports,
                                residuals=Residuals)
