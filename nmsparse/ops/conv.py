"""``nm_conv``: an NHWC x HWIO convolution with N:M-pruned kernels and a hand-written VJP.

FF is the convolution with ``W * M_ff`` (groups along input channels C), BP the transposed
convolution with ``W * M_bp`` (groups along output channels O), and the weight gradient is the
ordinary dense conv weight gradient plus the SR-STE term. Saved for the backward: ``x``, the dense
master ``w`` and the implementation's ``aux`` residuals (none for ``"xla"``). A ``mask_source``
takes the ``nm_conv_src_*`` primitives, as in :mod:`nmsparse.ops.dense`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from nmsparse.ops.config import ConvDims, NMConfig, Padding
from nmsparse.ops.dense import _check_float, check_mask_source, make_config
from nmsparse.ops.primitives import (nm_conv_bwd_p, nm_conv_fwd_p, nm_conv_src_bwd_p,
                                     nm_conv_src_fwd_p)
from nmsparse.types import PatternLike, check_method


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _nm_conv(x: jax.Array, w: jax.Array, cfg: NMConfig, dims: ConvDims) -> jax.Array:
  return nm_conv_fwd_p.bind(x, w, cfg=cfg, geom=dims)[0]


def _nm_conv_fwd(x, w, cfg, dims):
  y, *aux = nm_conv_fwd_p.bind(x, w, cfg=cfg, geom=dims)
  return y, (x, w, tuple(aux))


def _nm_conv_bwd(cfg, dims, residuals, dy):
  x, w, aux = residuals
  dx, dw = nm_conv_bwd_p.bind(x, w, dy, *aux, cfg=cfg, geom=dims)
  return dx, dw


_nm_conv.defvjp(_nm_conv_fwd, _nm_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _nm_conv_src(x: jax.Array, w: jax.Array, src: jax.Array, cfg: NMConfig,
                 dims: ConvDims) -> jax.Array:
  return nm_conv_src_fwd_p.bind(x, w, src, cfg=cfg, geom=dims)[0]


def _nm_conv_src_fwd(x, w, src, cfg, dims):
  y, *aux = nm_conv_src_fwd_p.bind(x, w, src, cfg=cfg, geom=dims)
  return y, (x, w, src, tuple(aux))


def _nm_conv_src_bwd(cfg, dims, residuals, dy):
  x, w, src, aux = residuals
  dx, dw = nm_conv_src_bwd_p.bind(x, w, src, dy, *aux, cfg=cfg, geom=dims)
  return dx, dw, None  # the mask source gets no gradient


_nm_conv_src.defvjp(_nm_conv_src_fwd, _nm_conv_src_bwd)


def nm_conv(x: jax.Array, w: jax.Array, pattern: PatternLike | None = None, method: str = "bdwp",
            strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
            sr_ste_lambda: float = 2e-4, implementation: str | None = None, *,
            rhs_dilation: Sequence[int] | None = None, kernel_dilation: Sequence[int] | None = None,
            name: str | None = None, mask_source: jax.Array | None = None,
            **unused: Any) -> jax.Array:
  """2-D convolution of NHWC ``x`` with an HWIO kernel pruned N:M per ``method`` (SPEC §1).

  Args:
    x: ``[N, H, W, C]`` in the compute dtype.
    w: dense master kernel ``[kh, kw, C, O]``.
    pattern, method, sr_ste_lambda, implementation: as in :func:`nmsparse.nm_dense`.
    strides, padding: as in ``lax.conv_general_dilated`` (``"SAME"``, ``"VALID"`` or explicit
      ``((lo, hi), (lo, hi))``).
    rhs_dilation / kernel_dilation: kernel dilation (either name).
    name: the layer's name, used in error messages only.
    mask_source: ``None`` (masks from ``w``) or an array of ``w``'s shape to compute the masks
      from, as in :func:`nmsparse.nm_dense`.

  Returns:
    ``[N, H', W', O]`` in ``x``'s dtype.
  """
  _check_float("x", x)
  _check_float("w", w)
  dims = ConvDims.create(x.shape, w.shape, strides, padding,
                         rhs_dilation if rhs_dilation is not None else kernel_dilation)
  if method == "dense":
    check_method(method)
    return dims.conv(x, w.astype(x.dtype))
  cfg = make_config(w.shape, pattern, method, sr_ste_lambda, implementation, name)
  if mask_source is None:
    return _nm_conv(x, w, cfg, dims)
  return _nm_conv_src(x, w, check_mask_source(w, mask_source, name), cfg, dims)


@dataclasses.dataclass(frozen=True)
class ConvLayerArgs:
  """A conv layer's settings normalised to what :func:`nm_conv` takes (2-D)."""

  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: Padding
  kernel_dilation: tuple[int, int]


def _pairs(value: Any, what: str) -> tuple[int, int]:
  value = 1 if value is None else value
  value = (value, value) if isinstance(value, int) else tuple(value)
  if len(value) != 2:
    raise ValueError(f"Sparse convs are 2-D: {what} needs 2 values, got {value}.")
  return value


def conv_layer_args(name: str, kernel_size: Any, strides: Any, padding: Any,
                    kernel_dilation: Any = 1, input_dilation: Any = 1,
                    feature_group_count: int = 1, shared_weights: bool = True,
                    mask: Any = None) -> ConvLayerArgs:
  """Checks a Flax conv layer's settings for the sparse path and normalises them.

  Raises:
    ValueError: grouped/depthwise, unshared or masked convs, input dilation, or padding modes
      other than SAME/VALID/explicit: keep such layers dense with a layer rule.
  """
  if feature_group_count != 1 or not shared_weights or mask is not None:
    raise ValueError(f"Sparse conv {name!r} supports only plain convolutions (got "
                     f"feature_group_count={feature_group_count}, shared_weights={shared_weights}, "
                     f"mask={'set' if mask is not None else None}); keep it dense with a layer rule.")
  if _pairs(input_dilation, f"input_dilation of {name!r}") != (1, 1):
    raise ValueError(f"Sparse conv {name!r} does not support input_dilation={input_dilation}; "
                     f"keep it dense with a layer rule.")
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"Sparse conv {name!r} supports SAME, VALID or explicit padding, got "
                       f"{padding!r}; keep it dense with a layer rule.")
    padding = padding.upper()
  elif isinstance(padding, int):
    padding = ((padding, padding),) * 2
  else:
    padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
  return ConvLayerArgs(_pairs(kernel_size, f"kernel_size of {name!r}"),
                       _pairs(strides, f"strides of {name!r}"), padding,
                       _pairs(kernel_dilation, f"kernel_dilation of {name!r}"))
