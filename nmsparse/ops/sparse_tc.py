"""The ``"sparse_tc"`` implementation: forward and backward-data products on sparse tensor cores.

Every forward runs :func:`nmsparse.kernels.sparse_tc.compress` once: one pass over the fp32 master
weight writes the compressed forward operand ``(W * M_ff)^T``, for ``bdwp`` the compressed
backward-data operand ``W * M_bp``, and the ``M_ff`` keep bits. ``y = x @ W_ff`` and
``dx = dy @ W_bp^T`` run on cuSPARSELt's sparse GEMMs (``spmm``); the weight gradient is XLA's
dense dot plus the SR-STE term from the keep bits. ``srste`` (whose backward operand ``W * M_ff``
is not N:M along the backward reduction axis) takes the sparse forward and a masked dense
backward-data product.

Layers: dense kernels and 1x1 convolutions (stride 1, no padding: a GEMM over the pixels), patterns
with N <= 2 and M in (4, 8, 16), bf16 activations, both kernel dims multiples of 64, masks from the
kernel itself (no ``mask_every`` source). ``supports`` says which condition a layer misses, and
off-GPU or without the built extension why the backend is unavailable. Asked for by name, an
available ``sparse_tc`` hands the layers it cannot run to ``pallas`` (logged;
``registry.FALLBACK``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nmsparse import native
from nmsparse.kernels import sparse_tc as kernels
from nmsparse.ops.config import ConvDims, LayerSpec, NMConfig
from nmsparse.ops.impl import Implementation
from nmsparse.pack import unpack_keep_bits
from nmsparse.prune.methods import sr_ste_decay

METHODS = ("bdwp", "srste")
M_VALUES = (4, 8, 16)


class Residuals(NamedTuple):
  """What the forward leaves for the backward.

  Attributes:
    bp: the compressed backward-data operand (``bdwp``); zero-size for ``srste``.
    ff_keep: the per-group keep bitmap of ``M_ff`` (SR-STE term, ``srste``'s backward operand).
  """

  bp: jax.Array
  ff_keep: jax.Array


def _m_ff(w: jax.Array, keep: jax.Array, cfg: NMConfig) -> jax.Array:
  return unpack_keep_bits(keep, cfg.pattern, axis=0).reshape(w.shape)


def dense_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *,
              cfg: NMConfig) -> tuple[jax.Array, Residuals]:
  """``x @ (W * M_ff)`` on sparse tensor cores, from one compression pass."""
  del src  # supports() refuses a given mask source
  k, o = w.shape
  ff, bp, keep = kernels.compress(w, cfg.pattern, bp=cfg.method == "bdwp")
  y = kernels.spmm(ff, x, o, k)
  return y, Residuals(jnp.zeros((0,), jnp.uint8) if bp is None else bp, keep)


def dense_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
              cfg: NMConfig) -> tuple[jax.Array, jax.Array]:
  """``dy @ (W * M_bp)^T`` (sparse for bdwp) and ``x^T dy`` plus the SR-STE term."""
  del src
  k, o = w.shape
  m_ff = None
  if res.bp.size:
    dx = kernels.spmm(res.bp, dy, k, o)
  else:
    m_ff = _m_ff(w, res.ff_keep, cfg)
    w_bp = jnp.where(m_ff, w, 0).astype(dy.dtype)
    dx = jnp.dot(dy, w_bp.T, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.dot(x.T, dy, preferred_element_type=jnp.float32).astype(w.dtype)
  if cfg.sr_ste_lambda:
    m_ff = _m_ff(w, res.ff_keep, cfg) if m_ff is None else m_ff
    dw = dw + sr_ste_decay(w, m_ff, cfg.sr_ste_lambda)
  return dx, dw


def conv_fwd(x: jax.Array, w: jax.Array, src: jax.Array, *, cfg: NMConfig,
             geom: ConvDims) -> tuple[jax.Array, Residuals]:
  """A 1x1 convolution as the dense product over all pixels."""
  del geom
  n, h, wd, c = x.shape
  y, res = dense_fwd(x.reshape(n * h * wd, c), w.reshape(w.shape[-2:]), src, cfg=cfg)
  return y.reshape(n, h, wd, -1), res


def conv_bwd(x: jax.Array, w: jax.Array, src: jax.Array, dy: jax.Array, res: Residuals, *,
             cfg: NMConfig, geom: ConvDims) -> tuple[jax.Array, jax.Array]:
  """The backward of :func:`conv_fwd`."""
  del geom
  n, h, wd, c = x.shape
  dx, dw = dense_bwd(x.reshape(-1, c), w.reshape(w.shape[-2:]), src,
                     dy.reshape(-1, dy.shape[-1]), res, cfg=cfg)
  return dx.reshape(x.shape), dw.reshape(w.shape)


def supports(layer: LayerSpec) -> str | None:
  """``None`` if the layer runs on sparse tensor cores here, else the condition it misses."""
  why = native.status()
  if why is not None:
    return why
  p = layer.pattern
  if p.n > 2 or p.m not in M_VALUES:
    return f"pattern {p} is not a 2:4 matrix (needs N <= 2 and M in {M_VALUES})"
  if layer.method not in METHODS:
    return (f"method {layer.method!r} has no backward operand that is N:M along the output axis "
            f"(sparse_tc runs {METHODS})")
  if layer.given_mask_source:
    return "masks from a mask source (mask_every > 1) are not computed by the fused compressor"
  if jnp.dtype(layer.dtype) != jnp.bfloat16:
    return f"activations are {jnp.dtype(layer.dtype).name}; the sparse GEMMs take bfloat16"
  if layer.op == "conv":
    kh, kw = layer.w_shape[:2]
    if (kh, kw) != (1, 1) or layer.geom is None or layer.geom.strides != (1, 1) or any(
        lo or hi for lo, hi in layer.geom.padding):
      return "only 1x1 convolutions with stride 1 and no padding run as GEMMs"
  k, o = layer.w_shape[-2:]
  return kernels.eligible_shape(o, k) or kernels.eligible_shape(k, o)


IMPLEMENTATION = Implementation(name="sparse_tc", dense_fwd=dense_fwd, dense_bwd=dense_bwd,
                                conv_fwd=conv_fwd, conv_bwd=conv_bwd, supports=supports,
                                residuals=Residuals, available=native.status)
