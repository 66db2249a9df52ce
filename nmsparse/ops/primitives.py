"""The four sparse primitives and their rules: abstract evaluation, lowering, batching, eager impl.

``nm_dense_fwd``/``nm_conv_fwd`` take ``(x, w, src[, perm])`` and return the FF product followed by
the fields of the implementation's residuals; ``nm_dense_bwd``/``nm_conv_bwd`` take
``(x, w, src[, perm], dy, *residual fields)`` and return ``(dx, dw)``. ``src`` is the mask source
(the kernel itself unless ``cfg.given_mask_source``); ``perm``, only with
``cfg.given_permutation``, reaches the implementation as the keyword ``perm``. They show up by name
in jaxprs. Each lowers through the
:class:`~nmsparse.ops.impl.Implementation` named by its ``cfg`` parameter, so one program can hold
several. Autodiff is not defined on the primitives: ``nm_dense``/``nm_conv`` wire them into a
``custom_vjp``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from nmsparse.ops.impl import Implementation
from nmsparse.ops.registry import get_implementation

Select = Callable[[Implementation], Callable]


def _flat_fn(select: Select, is_fwd: bool, params: dict) -> Callable:
  """The implementation's function for ``params["cfg"]`` with flat operands and results."""
  impl = get_implementation(params["cfg"].implementation)
  fn = functools.partial(select(impl), **params)
  n_perm = int(params["cfg"].given_permutation)
  perm_kwargs = lambda perm: {"perm": perm[0]} if perm else {}
  if is_fwd:
    def fwd(x, w, src, *perm):
      y, res = fn(x, w, src, **perm_kwargs(perm))
      return (y, *res)
    return fwd

  def bwd(x, w, src, *rest):
    perm, (dy, *res) = rest[:n_perm], rest[n_perm:]
    return tuple(fn(x, w, src, dy, impl.residuals(*res), **perm_kwargs(perm)))
  return bwd


@functools.lru_cache(maxsize=None)
def _jitted(select: Select, is_fwd: bool, params_key):
  return jax.jit(_flat_fn(select, is_fwd, dict(params_key)))


def _define(name: str, select: Select, is_fwd: bool) -> Primitive:
  prim = Primitive(name)
  prim.multiple_results = True

  def impl(*args, **params):
    return _jitted(select, is_fwd, tuple(sorted(params.items())))(*args)

  def abstract_eval(*avals, **params):
    out = jax.eval_shape(_flat_fn(select, is_fwd, params),
                         *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals))
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in out]

  def lowering(ctx, *args, **params):
    return mlir.lower_fun(_flat_fn(select, is_fwd, params), multiple_results=True)(ctx, *args)

  def batch(args, dims, **params):
    if is_fwd and dims[0] is not None and all(d is None for d in dims[1:]):
      return _batch_rows(prim, args, dims, params)
    out = jax.vmap(_flat_fn(select, is_fwd, params), in_axes=tuple(dims), out_axes=0)(*args)
    return out, (0,) * len(out)

  prim.def_impl(impl)
  prim.def_abstract_eval(abstract_eval)
  mlir.register_lowering(prim, lowering)
  batching.primitive_batchers[prim] = batch
  return prim


def _batch_rows(prim, args, dims, params):
  """vmap over ``x`` alone: fold the mapped axis into the rows (dense) or images (conv)."""
  x, *rest = args
  x = jnp.moveaxis(x, dims[0], 0)
  v, b = x.shape[:2]
  out = prim.bind(x.reshape((v * b,) + x.shape[2:]), *rest, **params)
  y, res = out[0], out[1:]
  return [y.reshape((v, b) + y.shape[1:]), *res], [0] + [None] * len(res)


def _dense_fwd(impl: Implementation) -> Callable:
  return impl.dense_fwd


def _dense_bwd(impl: Implementation) -> Callable:
  return impl.dense_bwd


def _conv_fwd(impl: Implementation) -> Callable:
  return impl.conv_fwd


def _conv_bwd(impl: Implementation) -> Callable:
  return impl.conv_bwd


nm_dense_fwd_p = _define("nm_dense_fwd", _dense_fwd, is_fwd=True)
nm_dense_bwd_p = _define("nm_dense_bwd", _dense_bwd, is_fwd=False)
nm_conv_fwd_p = _define("nm_conv_fwd", _conv_fwd, is_fwd=True)
nm_conv_bwd_p = _define("nm_conv_bwd", _conv_bwd, is_fwd=False)
