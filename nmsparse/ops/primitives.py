"""The sparse primitives and their rules: abstract evaluation, lowering, batching, eager impl.

``nm_dense_fwd``/``nm_conv_fwd`` compute the FF product (and any residuals the chosen
implementation wants kept); ``nm_dense_bwd``/``nm_conv_bwd`` compute the BP product and the weight
gradient. ``nm_dense_src_*``/``nm_conv_src_*`` are the same with a given mask source (an extra
operand after ``w``, the kernel snapshot of ``mask_every > 1``) that the masks are computed from.
They show up by name in jaxprs. Each lowers through the implementation named by its ``cfg``
parameter (``nmsparse.ops.xla`` or ``nmsparse.ops.pallas``), so one program can hold both.
Autodiff is not defined on the primitives: ``nm_dense``/``nm_conv`` wire them into a ``custom_vjp``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from nmsparse.ops.registry import get_impl


def _impl_fn(fn_name: str, params: dict):
  cfg = params["cfg"]
  return functools.partial(getattr(get_impl(cfg.implementation), fn_name), **params)


def _flat(fn, fn_name: str):
  """Adapts a forward ``-> (y, aux_tuple)`` or a backward ``-> (dx, dw)`` to a flat result tuple."""

  def flat(*args):
    out = fn(*args)
    if fn_name.endswith("_fwd"):
      return (out[0], *out[1])
    return tuple(out)

  return flat


@functools.lru_cache(maxsize=None)
def _jitted(fn_name: str, params_key):
  return jax.jit(_flat(_impl_fn(fn_name, dict(params_key)), fn_name))


def _define(name: str, fn_name: str) -> Primitive:
  prim = Primitive(name)
  prim.multiple_results = True

  def impl(*args, **params):
    return _jitted(fn_name, tuple(sorted(params.items())))(*args)

  def abstract_eval(*avals, **params):
    out = jax.eval_shape(_flat(_impl_fn(fn_name, params), fn_name),
                         *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals))
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in out]

  def lowering(ctx, *args, **params):
    return mlir.lower_fun(_flat(_impl_fn(fn_name, params), fn_name), multiple_results=True)(ctx, *args)

  def batch(args, dims, **params):
    if fn_name.endswith("_fwd") and dims[0] is not None and all(
        d is None for d in dims[1:]):
      return _batch_rows(prim, args, dims, params)
    fn = _flat(_impl_fn(fn_name, params), fn_name)
    in_axes = tuple(dims)
    out = jax.vmap(fn, in_axes=in_axes, out_axes=0)(*args)
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
  y, aux = out[0], out[1:]
  return [y.reshape((v, b) + y.shape[1:]), *aux], [0] + [None] * len(aux)


nm_dense_fwd_p = _define("nm_dense_fwd", "dense_fwd")
nm_dense_bwd_p = _define("nm_dense_bwd", "dense_bwd")
nm_conv_fwd_p = _define("nm_conv_fwd", "conv_fwd")
nm_conv_bwd_p = _define("nm_conv_bwd", "conv_bwd")
nm_dense_src_fwd_p = _define("nm_dense_src_fwd", "dense_src_fwd")
nm_dense_src_bwd_p = _define("nm_dense_src_bwd", "dense_src_bwd")
nm_conv_src_fwd_p = _define("nm_conv_src_fwd", "conv_src_fwd")
nm_conv_src_bwd_p = _define("nm_conv_src_bwd", "conv_src_bwd")
