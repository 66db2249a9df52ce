"""The ``"xla"`` implementation: masks from ``nm_mask`` applied to dense operands, plain XLA products.

This is the reference lowering of the sparse primitives. Every implementation module provides the
same four functions:

* ``dense_fwd(x, w, *, cfg) -> (y, aux)``: FF product ``x @ (W*M_ff)`` on ``x [B, K]``, ``w [K, O]``;
  ``aux`` is a tuple of extra residuals the backward needs (empty here: masks are recomputed).
* ``dense_bwd(x, w, dy, *aux, cfg) -> (dx, dw)``: BP product ``dy @ (W*M_bp)^T`` and the dense weight
  gradient ``x^T dy`` plus the SR-STE term.
* ``conv_fwd(x, w, *, cfg, geom)`` and ``conv_bwd(x, w, dy, *aux, cfg, geom)``: the same for NHWC x HWIO
  convolutions.

``x`` and ``dy`` are in the compute dtype, ``w`` in the master dtype; ``dw`` comes back in ``w``'s
dtype, accumulated in float32.

A *given mask source* (``mask_every > 1``: the masks come from a kernel snapshot ``src``, not from
``w``) has its own four functions, ``dense_src_fwd(x, w, src, *, cfg)``,
``dense_src_bwd(x, w, src, dy, *aux, cfg)``, ``conv_src_fwd`` and ``conv_src_bwd``: the operands are
still ``w`` masked, the SR-STE term is ``lam * (1 - M_ff(src)) * W``. Here the plain functions are
these with ``src = w``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from nmsparse.ops.config import ConvDims, NMConfig
from nmsparse.prune.methods import bp_mask, ff_mask, sr_ste_decay


def _masked(w, mask, dtype):
  return jnp.where(mask, w, jnp.zeros((), w.dtype)).astype(dtype)


def _decay(w, src, cfg: NMConfig):
  if not cfg.sr_ste_lambda:
    return jnp.zeros((), w.dtype)
  return sr_ste_decay(w, ff_mask(src, cfg.pattern), cfg.sr_ste_lambda)


def dense_fwd(x: jax.Array, w: jax.Array, *, cfg: NMConfig):
  return dense_src_fwd(x, w, w, cfg=cfg)


def dense_bwd(x: jax.Array, w: jax.Array, dy: jax.Array, *, cfg: NMConfig):
  return dense_src_bwd(x, w, w, dy, cfg=cfg)


def conv_fwd(x: jax.Array, w: jax.Array, *, cfg: NMConfig, geom: ConvDims):
  return conv_src_fwd(x, w, w, cfg=cfg, geom=geom)


def conv_bwd(x: jax.Array, w: jax.Array, dy: jax.Array, *, cfg: NMConfig, geom: ConvDims):
  return conv_src_bwd(x, w, w, dy, cfg=cfg, geom=geom)


def dense_src_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig):
  y = jnp.dot(x, _masked(w, ff_mask(src, cfg.pattern), x.dtype),
              preferred_element_type=jnp.float32)
  return y.astype(x.dtype), ()


def dense_src_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, *, cfg: NMConfig):
  w_bp = _masked(w, bp_mask(src, cfg.pattern, cfg.method), dy.dtype)
  dx = jnp.dot(dy, w_bp.T, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.dot(x.T, dy, preferred_element_type=jnp.float32).astype(w.dtype)
  return dx, dw + _decay(w, src, cfg)


def conv_src_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig, geom: ConvDims):
  y = geom.conv(x, _masked(w, ff_mask(src, cfg.pattern), x.dtype))
  return y, ()


def conv_src_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, *, cfg: NMConfig,
                 geom: ConvDims):
  w_bp = _masked(w, bp_mask(src, cfg.pattern, cfg.method), x.dtype)
  (dx,) = jax.linear_transpose(lambda x_: geom.conv(x_, w_bp), x)(dy)
  w_c = jax.ShapeDtypeStruct(w.shape, x.dtype)
  (dw,) = jax.linear_transpose(lambda w_: geom.conv(x, w_), w_c)(dy)
  return dx, dw.astype(w.dtype) + _decay(w, src, cfg)
