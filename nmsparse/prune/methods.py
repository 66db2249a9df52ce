"""The masks each training method uses in the forward (FF) and backward-data (BP) products.

Kernels put input channels on axis ``-2`` and outputs on ``-1`` (dense ``[in, out]``, conv HWIO).
FF groups run along ``-2`` (per tap), BP groups along ``-1``; ``bimask`` conv kernels group FF along
the flattened ``(C, kh, kw)`` axis and BP along a permuted output axis (Bi-Mask's code, SPEC §1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmsparse.prune.mask import nm_mask
from nmsparse.types import NMPattern

IN_AXIS = -2
OUT_AXIS = -1


def flat_taps(w: jax.Array) -> jax.Array:
  """An HWIO kernel as ``[C * kh * kw, O]`` in PyTorch's ``weight.view(O, -1)`` order (C slowest)."""
  return jnp.transpose(w, (2, 0, 1, 3)).reshape(-1, w.shape[-1])


def unflat_taps(a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The inverse of :func:`flat_taps` for a kernel of ``shape`` (HWIO)."""
  kh, kw, c, o = shape
  return jnp.transpose(a.reshape(c, kh, kw, o), (1, 2, 0, 3))


def ff_mask(w: jax.Array, pattern: NMPattern, method: str | None = None) -> jax.Array:
  """``M_ff``: N:M along input channels, the reduction axis of the forward product.

  ``method="bimask"`` with an HWIO kernel groups along the flattened ``(C, kh, kw)`` axis
  (:func:`flat_taps`); every other case groups along ``C`` for every tap.
  """
  if method == "bimask" and w.ndim == 4:
    return unflat_taps(nm_mask(flat_taps(w), pattern, axis=0), w.shape)
  return nm_mask(w, pattern, axis=IN_AXIS)


def bimask_backward(w: jax.Array, m_ff: jax.Array, pattern: NMPattern,
                    perm: jax.Array | None) -> jax.Array:
  """``M_ff * M_b``: ``M_b`` keeps the N largest ``|W * M_ff|`` of every M consecutive outputs in
  the order ``perm`` (``None`` = identity), mapped back to the kernel's own output order."""
  w_s = jnp.where(m_ff, w, jnp.zeros((), w.dtype))
  if perm is None:
    return m_ff & nm_mask(w_s, pattern, axis=OUT_AXIS)
  m_b = nm_mask(jnp.take(w_s, perm, axis=OUT_AXIS), pattern, axis=OUT_AXIS)
  # Back to the kernel's order by scattering to ``perm`` rather than gathering with its inverse:
  # XLA fuses that gather into the mask's computation, which its CPU backend then runs element by
  # element (``bp_mask`` of a 3x3x512x512 kernel on a 2-core CPU: 112 ms gathered, 64 ms
  # scattered; results/bimask_cpu.json, scripts/bimask_cost.py).
  return m_ff & jnp.zeros_like(m_b).at[..., perm].set(m_b)


def bp_mask(w: jax.Array, pattern: NMPattern, method: str,
            perm: jax.Array | None = None) -> jax.Array:
  """The mask of the weights the backward-data product uses (SPEC §1 table).

  ``srste``: ``M_ff``; ``bdwp``: ``M_bp`` (N:M along output channels); ``bimask``:
  :func:`bimask_backward` with the permutation ``perm`` of the output axis (``None`` = identity).
  """
  if method == "srste":
    return ff_mask(w, pattern)
  if method == "bdwp":
    return nm_mask(w, pattern, axis=OUT_AXIS)
  if method == "bimask":
    return bimask_backward(w, ff_mask(w, pattern, method), pattern, perm)
  raise ValueError(f"Method {method!r} has no backward-data mask; expected srste, bdwp or bimask.")


def sr_ste_decay(w: jax.Array, m_ff: jax.Array, sr_ste_lambda: float) -> jax.Array:
  """The SR-STE term ``lam * (1 - M_ff) * W`` added to the dense weight gradient."""
  return jnp.where(m_ff, jnp.zeros((), w.dtype), jnp.asarray(sr_ste_lambda, w.dtype) * w)
