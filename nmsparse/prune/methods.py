"""The masks each training method uses in the forward (FF) and backward-data (BP) products.

Kernels of every layer kind put input channels on axis ``-2`` and output channels on axis ``-1``
(dense ``[in, out]``, conv HWIO), so FF groups run along ``-2`` and BP groups along ``-1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmsparse.prune.mask import nm_mask
from nmsparse.types import NMPattern

IN_AXIS = -2
OUT_AXIS = -1


def ff_mask(w: jax.Array, pattern: NMPattern) -> jax.Array:
  """``M_ff``: N:M along input channels, the reduction axis of the forward product."""
  return nm_mask(w, pattern, axis=IN_AXIS)


def bp_mask(w: jax.Array, pattern: NMPattern, method: str) -> jax.Array:
  """The mask of the weights the backward-data product uses (SPEC §1 table).

  ``srste``: ``M_ff``; ``bdwp``: ``M_bp`` (N:M along output channels); ``bimask``:
  ``M_ff * nm_mask(W * M_ff, axis=out)``.
  """
  if method == "srste":
    return ff_mask(w, pattern)
  if method == "bdwp":
    return nm_mask(w, pattern, axis=OUT_AXIS)
  if method == "bimask":
    m_ff = ff_mask(w, pattern)
    return m_ff & nm_mask(jnp.where(m_ff, w, 0), pattern, axis=OUT_AXIS)
  raise ValueError(f"Method {method!r} has no backward-data mask; expected srste, bdwp or bimask.")


def sr_ste_decay(w: jax.Array, m_ff: jax.Array, sr_ste_lambda: float) -> jax.Array:
  """The SR-STE term ``lam * (1 - M_ff) * W`` added to the dense weight gradient."""
  return jnp.where(m_ff, jnp.zeros((), w.dtype), jnp.asarray(sr_ste_lambda, w.dtype) * w)
