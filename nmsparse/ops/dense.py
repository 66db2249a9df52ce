"""``nm_dense``: a dense layer's product with N:M-pruned weights and a hand-written VJP.

Forward (FF): ``y = x @ (W * M_ff)``. Backward: ``dx = dy @ (W * M_bp)^T`` with the method's BP mask,
``dW = x^T dy + lam * (1 - M_ff) * W`` straight to the dense master weights (SPEC §1).

The primitives take the mask source as a third operand: ``w`` itself (masks fresh from ``w``), or a
given ``mask_source`` (``mask_every > 1``) with ``NMConfig.given_mask_source`` set; the source gets
no gradient. ``bimask`` may add its backward-mask permutation (``permutation=``) as one more operand
(``NMConfig.given_permutation``). Saved for the backward: ``x`` (compute dtype), the dense master
``w``, the source and permutation (alive anyway as layer variables) and the implementation's
residuals.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nmsparse.ops.config import LayerSpec, NMConfig
from nmsparse.ops.primitives import nm_dense_bwd_p, nm_dense_fwd_p
from nmsparse.ops.registry import resolve_implementation
from nmsparse.prune.mask import check_groupable
from nmsparse.types import BP_SPARSE_METHODS, NMPattern, PatternLike, check_method


def perm_operands(perm: jax.Array | None) -> tuple[jax.Array, ...]:
  """The primitives' permutation operand: none without one."""
  return () if perm is None else (perm,)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _nm_matmul(x: jax.Array, w: jax.Array, src: jax.Array, perm: jax.Array | None,
               cfg: NMConfig) -> jax.Array:
  return nm_dense_fwd_p.bind(x, w, src, *perm_operands(perm), cfg=cfg)[0]


def _nm_matmul_fwd(x, w, src, perm, cfg):
  y, *res = nm_dense_fwd_p.bind(x, w, src, *perm_operands(perm), cfg=cfg)
  return y, (x, w, src, perm, tuple(res))


def _nm_matmul_bwd(cfg, residuals, dy):
  x, w, src, perm, res = residuals
  dx, dw = nm_dense_bwd_p.bind(x, w, src, *perm_operands(perm), dy, *res, cfg=cfg)
  return dx, dw, None, None  # the mask source and the permutation get no gradient


_nm_matmul.defvjp(_nm_matmul_fwd, _nm_matmul_bwd)


def check_mask_source(w: jax.Array, mask_source: jax.Array, name: str | None) -> jax.Array:
  """The mask source with its gradient stopped, after checking it matches ``w``.

  Raises:
    ValueError: a non-floating source or one whose shape differs from ``w``'s.
  """
  check_float("mask_source", mask_source)
  if mask_source.shape != w.shape:
    raise ValueError(f"mask_source must have the kernel's shape {w.shape}, got "
                     f"{mask_source.shape}{'' if name is None else f' in layer {name!r}'}.")
  return lax.stop_gradient(mask_source)


def make_config(w_shape: tuple[int, ...], pattern: PatternLike | None, method: str,
                sr_ste_lambda: float, implementation: str | None, name: str | None, *,
                op: str = "dense", x_shape: tuple[int, ...] | None = None, dtype: Any = None,
                given_mask_source: bool = False, geom: Any = None,
                given_permutation: bool = False) -> NMConfig:
  """Validates a sparse call's settings against the kernel shape and bundles them.

  ``x_shape``/``dtype`` (default: a batch of one, ``float32``) and a conv's ``geom`` describe the
  call to the implementations' ``supports``.
  """
  check_method(method)
  if pattern is None:
    raise ValueError(f"method={method!r} needs an N:M pattern (e.g. '2:8'); got pattern=None"
                     f"{'' if name is None else f' for layer {name!r}'}.")
  pattern = NMPattern.parse(pattern)
  what = "kernel" if name is None else f"kernel of layer {name!r}"
  if method == "bimask" and len(w_shape) == 4:  # FF groups along the flattened (C, kh, kw) axis
    kh, kw, c, o = w_shape
    check_groupable((c * kh * kw, o), 0, pattern, what=f"{what} flattened to (C, kh, kw) x O")
  else:
    check_groupable(w_shape, -2, pattern, what=what)
  if method in BP_SPARSE_METHODS:
    check_groupable(w_shape, -1, pattern, what=what)
  x_shape = (1, w_shape[0]) if x_shape is None else tuple(x_shape)
  dtype = jnp.dtype(jnp.float32 if dtype is None else dtype)
  layer = LayerSpec(op, x_shape, tuple(w_shape), dtype, pattern, method, given_mask_source, geom,
                    given_permutation)
  return NMConfig(pattern, method, float(sr_ste_lambda),
                  resolve_implementation(implementation, layer), given_mask_source,
                  given_permutation)


def check_float(name: str, a: jax.Array):
  """Raises ``ValueError`` unless ``a`` is floating point."""
  if not jnp.issubdtype(a.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype {a.dtype} (shape {a.shape}).")


def sparse_operands(w: jax.Array, mask_source: jax.Array | None,
                    name: str | None) -> tuple[jax.Array, bool]:
  """The primitives' mask-source operand and ``given_mask_source``: ``(w, False)`` without one."""
  if mask_source is None:
    return w, False
  return check_mask_source(w, mask_source, name), True


def check_permutation(w: jax.Array, permutation: jax.Array | None, method: str,
                      name: str | None) -> jax.Array | None:
  """The ``bimask`` backward-mask permutation as int32 with its gradient stopped (or ``None``).

  Raises:
    ValueError: a permutation for another method, or one that is not an integer vector of the
      kernel's output length.
  """
  if permutation is None:
    return None
  where = "" if name is None else f" in layer {name!r}"
  if method != "bimask":
    raise ValueError(f"permutation is bimask's backward-mask order; method={method!r} takes "
                     f"none{where}.")
  if (not jnp.issubdtype(permutation.dtype, jnp.integer) or
      permutation.shape != (w.shape[-1],)):
    raise ValueError(f"permutation must be an integer vector of the kernel's output length "
                     f"{w.shape[-1]}, got dtype {permutation.dtype} shape {permutation.shape}"
                     f"{where}.")
  return lax.stop_gradient(permutation.astype(jnp.int32))


def nm_dense(x: jax.Array, w: jax.Array, pattern: PatternLike | None = None, method: str = "bdwp",
             sr_ste_lambda: float = 2e-4, implementation: str | None = None, *,
             precision: Any = None, name: str | None = None,
             mask_source: jax.Array | None = None,
             permutation: jax.Array | None = None) -> jax.Array:
  """``x @ W`` with ``W`` pruned N:M per ``method`` (SPEC §1), differentiable by a custom VJP.

  Args:
    x: activations ``[..., K]`` in the compute dtype (e.g. bfloat16).
    w: dense master kernel ``[K, O]`` (e.g. float32); masks are computed from it unless
      ``mask_source`` is given.
    pattern: ``"N:M"`` or ``NMPattern``; ignored by ``method="dense"``.
    method: ``dense``, ``srste``, ``bdwp`` or ``bimask``.
    sr_ste_lambda: SR-STE decay ``lam`` on the pruned weights (0 turns it off). It is added to
      ``w``'s gradient once per call: a weight used by two calls, or shared by the examples of a
      ``vmap``, gets it once per call (twice, or once per mapped example).
    implementation: a name in ``nmsparse.ops.IMPLEMENTATIONS`` (``"xla"``, ``"pallas"``) or
      ``None`` (per layer, the first implementation for the backend that supports it).
    precision: passed to the dense product of ``method="dense"``.
    name: the layer's name, used in error messages only.
    mask_source: ``None`` (masks from ``w``, the default) or an array of ``w``'s shape to compute
      ``M_ff`` and the BP mask from instead, e.g. the kernel of the last mask refresh
      (``mask_every > 1``). The products still use ``w`` masked, the SR-STE term is
      ``lam * (1 - M_ff) * W`` with this ``M_ff``, and the source gets no gradient. Ignored by
      ``method="dense"``.
    permutation: ``bimask`` only: int32 ``[O]``, the output-axis order along which the backward
      mask's groups run (SPEC §1; the layers keep and refresh it). ``None`` = identity.

  Returns:
    ``[..., O]`` in ``x``'s dtype. The weight gradient has ``w``'s dtype.

  Raises:
    ValueError: non-floating inputs, a scalar ``x``, mismatched shapes, a bad pattern, method or
      implementation, or a kernel whose grouping axes are not divisible by M.
    TypeError: an unknown keyword argument.
  """
  check_float("x", x)
  check_float("w", w)
  if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
    raise ValueError(f"nm_dense needs x [..., K] and w [K, O]; got x {x.shape} and w {w.shape}"
                     f"{'' if name is None else f' in layer {name!r}'}.")
  if method == "dense":
    return lax.dot_general(x, w.astype(x.dtype), (((x.ndim - 1,), (0,)), ((), ())),
                           precision=precision)
  src, given = sparse_operands(w, mask_source, name)
  perm = check_permutation(w, permutation, method, name)
  x2 = x.reshape(-1, w.shape[0])
  cfg = make_config(w.shape, pattern, method, sr_ste_lambda, implementation, name, op="dense",
                    x_shape=x2.shape, dtype=x.dtype, given_mask_source=given,
                    given_permutation=perm is not None)
  y = _nm_matmul(x2, w, src, perm, cfg)
  return y.reshape(x.shape[:-1] + (w.shape[1],))
