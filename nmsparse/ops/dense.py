"""``nm_dense``: a dense layer's product with N:M-pruned weights and a hand-written VJP.

Forward (FF): ``y = x @ (W * M_ff)``. Backward: ``dx = dy @ (W * M_bp)^T`` with the method's BP mask,
``dW = x^T dy + lam * (1 - M_ff) * W`` straight to the dense master weights (SPEC §1).

Saved for the backward: ``x`` (compute dtype), the dense master ``w`` (alive anyway as a parameter)
and the implementation's ``aux`` residuals: nothing for ``"xla"`` (masks are recomputed from ``w``),
the packed BP operand (values and positions, ``N/M`` of the weight) for ``"pallas"``. No dense masked
copy of the weight outlives the forward.

With a ``mask_source`` (a kernel snapshot, ``mask_every > 1``) a second ``custom_vjp`` binds the
``nm_dense_src_*`` primitives instead: the masks come from the source, the operands from ``w``, the
SR-STE term is ``lam * (1 - M_ff(source)) * W``, and the source (kept as a residual: it is a layer
variable, alive anyway) gets no gradient.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nmsparse.ops.config import NMConfig
from nmsparse.ops.primitives import (nm_dense_bwd_p, nm_dense_fwd_p, nm_dense_src_bwd_p,
                                     nm_dense_src_fwd_p)
from nmsparse.ops.registry import resolve_implementation
from nmsparse.prune.mask import check_groupable
from nmsparse.types import NMPattern, PatternLike, check_method


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _nm_matmul(x: jax.Array, w: jax.Array, cfg: NMConfig) -> jax.Array:
  return nm_dense_fwd_p.bind(x, w, cfg=cfg)[0]


def _nm_matmul_fwd(x, w, cfg):
  y, *aux = nm_dense_fwd_p.bind(x, w, cfg=cfg)
  return y, (x, w, tuple(aux))


def _nm_matmul_bwd(cfg, residuals, dy):
  x, w, aux = residuals
  dx, dw = nm_dense_bwd_p.bind(x, w, dy, *aux, cfg=cfg)
  return dx, dw


_nm_matmul.defvjp(_nm_matmul_fwd, _nm_matmul_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _nm_matmul_src(x: jax.Array, w: jax.Array, src: jax.Array, cfg: NMConfig) -> jax.Array:
  return nm_dense_src_fwd_p.bind(x, w, src, cfg=cfg)[0]


def _nm_matmul_src_fwd(x, w, src, cfg):
  y, *aux = nm_dense_src_fwd_p.bind(x, w, src, cfg=cfg)
  return y, (x, w, src, tuple(aux))


def _nm_matmul_src_bwd(cfg, residuals, dy):
  x, w, src, aux = residuals
  dx, dw = nm_dense_src_bwd_p.bind(x, w, src, dy, *aux, cfg=cfg)
  return dx, dw, None  # the mask source gets no gradient


_nm_matmul_src.defvjp(_nm_matmul_src_fwd, _nm_matmul_src_bwd)


def check_mask_source(w: jax.Array, mask_source: jax.Array, name: str | None) -> jax.Array:
  """The mask source with its gradient stopped, after checking it matches ``w``.

  Raises:
    ValueError: a non-floating source or one whose shape differs from ``w``'s.
  """
  _check_float("mask_source", mask_source)
  if mask_source.shape != w.shape:
    raise ValueError(f"mask_source must have the kernel's shape {w.shape}, got "
                     f"{mask_source.shape}{'' if name is None else f' in layer {name!r}'}.")
  return lax.stop_gradient(mask_source)


def make_config(w_shape: tuple[int, ...], pattern: PatternLike | None, method: str,
                sr_ste_lambda: float, implementation: str | None, name: str | None) -> NMConfig:
  """Validates a sparse call's settings against the kernel shape and bundles them."""
  check_method(method)
  if pattern is None:
    raise ValueError(f"method={method!r} needs an N:M pattern (e.g. '2:8'); got pattern=None"
                     f"{'' if name is None else f' for layer {name!r}'}.")
  pattern = NMPattern.parse(pattern)
  what = "kernel" if name is None else f"kernel of layer {name!r}"
  check_groupable(w_shape, -2, pattern, what=what)
  if method in ("bdwp", "bimask"):
    check_groupable(w_shape, -1, pattern, what=what)
  return NMConfig(pattern, method, float(sr_ste_lambda), resolve_implementation(implementation))


def _check_float(name: str, a: jax.Array):
  if not jnp.issubdtype(a.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating point, got dtype {a.dtype} (shape {a.shape}).")


def nm_dense(x: jax.Array, w: jax.Array, pattern: PatternLike | None = None, method: str = "bdwp",
             sr_ste_lambda: float = 2e-4, implementation: str | None = None, *,
             precision: Any = None, name: str | None = None, mask_source: jax.Array | None = None,
             **unused: Any) -> jax.Array:
  """``x @ W`` with ``W`` pruned N:M per ``method`` (SPEC §1), differentiable by a custom VJP.

  Args:
    x: activations ``[..., K]`` in the compute dtype (e.g. bfloat16).
    w: dense master kernel ``[K, O]`` (e.g. float32); masks are computed from it unless
      ``mask_source`` is given.
    pattern: ``"N:M"`` or ``NMPattern``; ignored by ``method="dense"``.
    method: ``dense``, ``srste``, ``bdwp`` or ``bimask``.
    sr_ste_lambda: SR-STE decay ``lam`` on the pruned weights (0 turns it off).
    implementation: ``"xla"``, ``"pallas"`` or ``None`` (best for the backend).
    precision: passed to the dense product of ``method="dense"``.
    name: the layer's name, used in error messages only.
    mask_source: ``None`` (masks from ``w``, the default) or an array of ``w``'s shape to compute
      ``M_ff`` and the BP mask from instead, e.g. the kernel of the last mask refresh
      (``mask_every > 1``). The products still use ``w`` masked, the SR-STE term is
      ``lam * (1 - M_ff) * W`` with this ``M_ff``, and the source gets no gradient. Ignored by
      ``method="dense"``.

  Returns:
    ``[..., O]`` in ``x``'s dtype. The weight gradient has ``w``'s dtype.

  Raises:
    ValueError: non-floating inputs, mismatched shapes, a bad pattern or method, or a kernel whose
      grouping axes are not divisible by M.
  """
  _check_float("x", x)
  _check_float("w", w)
  if w.ndim != 2 or x.shape[-1] != w.shape[0]:
    raise ValueError(f"nm_dense needs x [..., K] and w [K, O]; got x {x.shape} and w {w.shape}"
                     f"{'' if name is None else f' in layer {name!r}'}.")
  if method == "dense":
    check_method(method)
    return lax.dot_general(x, w.astype(x.dtype), (((x.ndim - 1,), (0,)), ((), ())),
                           precision=precision)
  cfg = make_config(w.shape, pattern, method, sr_ste_lambda, implementation, name)
  if mask_source is None:
    y = _nm_matmul(x.reshape(-1, w.shape[0]), w, cfg)
  else:
    src = check_mask_source(w, mask_source, name)
    y = _nm_matmul_src(x.reshape(-1, w.shape[0]), w, src, cfg)
  return y.reshape(x.shape[:-1] + (w.shape[1],))
