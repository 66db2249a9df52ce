"""The ``"xla"`` implementation, the reference: ``nm_mask`` masks on dense operands, XLA products.

Masks come from ``src`` when ``cfg.given_mask_source`` and from ``w`` otherwise; ``bimask``'s
backward mask runs along the output order ``perm`` when given. Nothing is kept for the backward
(masks are recomputed), so its residuals are empty.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nmsparse.ops.config import ConvDims, LayerSpec, NMConfig
from nmsparse.ops.impl import Implementation
from nmsparse.prune.methods import bp_mask, ff_mask, sr_ste_decay


class Residuals(NamedTuple):
  """None: the backward recomputes the masks from its operands."""


def _mask_source(w: jax.Array, src: jax.Array, cfg: NMConfig) -> jax.Array:
  return src if cfg.given_mask_source else w


def _masked(w, mask, dtype):
  return jnp.where(mask, w, jnp.zeros((), w.dtype)).astype(dtype)


def _decay(w, src, cfg: NMConfig):
  if not cfg.sr_ste_lambda:
    return jnp.zeros((), w.dtype)
  return sr_ste_decay(w, ff_mask(src, cfg.pattern, cfg.method), cfg.sr_ste_lambda)


def dense_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig,
              perm: jax.Array | None = None) -> tuple[jax.Array, Residuals]:
  """``x @ (W * M_ff)``, accumulated in float32 (``perm`` only shapes the backward mask)."""
  del perm
  src = _mask_source(w, src, cfg)
  y = jnp.dot(x, _masked(w, ff_mask(src, cfg.pattern, cfg.method), x.dtype),
              preferred_element_type=jnp.float32)
  return y.astype(x.dtype), Residuals()


def dense_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
              cfg: NMConfig, perm: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``dy @ (W * M_bp)^T`` and ``x^T dy + lam * (1 - M_ff) * W``."""
  del res
  src = _mask_source(w, src, cfg)
  w_bp = _masked(w, bp_mask(src, cfg.pattern, cfg.method, perm), dy.dtype)
  dx = jnp.dot(dy, w_bp.T, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.dot(x.T, dy, preferred_element_type=jnp.float32).astype(w.dtype)
  return dx, dw + _decay(w, src, cfg)


def conv_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig, geom: ConvDims,
             perm: jax.Array | None = None) -> tuple[jax.Array, Residuals]:
  """The convolution with ``W * M_ff``."""
  del perm
  src = _mask_source(w, src, cfg)
  return geom.conv(x, _masked(w, ff_mask(src, cfg.pattern, cfg.method), x.dtype)), Residuals()


def conv_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
             cfg: NMConfig, geom: ConvDims,
             perm: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The transposed convolution with ``W * M_bp`` and the conv weight gradient plus SR-STE."""
  del res
  src = _mask_source(w, src, cfg)
  w_bp = _masked(w, bp_mask(src, cfg.pattern, cfg.method, perm), x.dtype)
  (dx,) = jax.linear_transpose(lambda x_: geom.conv(x_, w_bp), x)(dy)
  w_c = jax.ShapeDtypeStruct(w.shape, x.dtype)
  (dw,) = jax.linear_transpose(lambda w_: geom.conv(x, w_), w_c)(dy)
  return dx, dw.astype(w.dtype) + _decay(w, src, cfg)


def supports(layer: LayerSpec) -> str | None:
  """Every pattern, method and backend."""
  del layer
  return None


IMPLEMENTATION = Implementation(name="xla", dense_fwd=dense_fwd, dense_bwd=dense_bwd,
                                conv_fwd=conv_fwd, conv_bwd=conv_bwd, supports=supports,
                                residuals=Residuals)
