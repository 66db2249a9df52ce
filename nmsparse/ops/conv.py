"""``nm_conv``: an NHWC x HWIO convolution with N:M-pruned kernels and a hand-written VJP.

FF is the convolution with ``W * M_ff`` (groups along input channels C; ``bimask``: along the
flattened ``(C, kh, kw)`` axis), BP the transposed convolution with ``W * M_bp`` (groups along
output channels O), and the weight gradient is the ordinary dense conv weight gradient plus the
SR-STE term. The mask source, the permutation and the residuals work as in
:mod:`nmsparse.ops.dense`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax

from nmsparse.layer_args import Padding
from nmsparse.ops.config import ConvDims, NMConfig
from nmsparse.ops.dense import (check_float, check_permutation, make_config, perm_operands,
                                sparse_operands)
from nmsparse.ops.primitives import nm_conv_bwd_p, nm_conv_fwd_p
from nmsparse.types import PatternLike


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _nm_conv(x: jax.Array, w: jax.Array, src: jax.Array, perm: jax.Array | None, cfg: NMConfig,
             dims: ConvDims) -> jax.Array:
  return nm_conv_fwd_p.bind(x, w, src, *perm_operands(perm), cfg=cfg, geom=dims)[0]


def _nm_conv_fwd(x, w, src, perm, cfg, dims):
  y, *res = nm_conv_fwd_p.bind(x, w, src, *perm_operands(perm), cfg=cfg, geom=dims)
  return y, (x, w, src, perm, tuple(res))


def _nm_conv_bwd(cfg, dims, residuals, dy):
  x, w, src, perm, res = residuals
  dx, dw = nm_conv_bwd_p.bind(x, w, src, *perm_operands(perm), dy, *res, cfg=cfg, geom=dims)
  return dx, dw, None, None  # the mask source and the permutation get no gradient


_nm_conv.defvjp(_nm_conv_fwd, _nm_conv_bwd)


def nm_conv(x: jax.Array, w: jax.Array, pattern: PatternLike | None = None, method: str = "bdwp",
            strides: int | Sequence[int] = (1, 1), padding: int | Padding = "SAME",
            sr_ste_lambda: float = 2e-4, implementation: str | None = None, *,
            rhs_dilation: int | Sequence[int] | None = None,
            kernel_dilation: int | Sequence[int] | None = None, name: str | None = None,
            mask_source: jax.Array | None = None,
            permutation: jax.Array | None = None) -> jax.Array:
  """2-D convolution of NHWC ``x`` with an HWIO kernel pruned N:M per ``method`` (SPEC §1).

  Args:
    x: ``[N, H, W, C]`` in the compute dtype.
    w: dense master kernel ``[kh, kw, C, O]``.
    pattern, method, implementation: as in :func:`nmsparse.nm_dense`.
    strides: an int or two ints, as in ``lax.conv_general_dilated`` and ``flax.linen.Conv``.
    padding: ``"SAME"``, ``"VALID"``, an int ``p`` (``p`` on every side) or explicit
      ``((lo, hi), (lo, hi))``.
    sr_ste_lambda: as in :func:`nmsparse.nm_dense`: added once per call, so a kernel used by two
      calls, or shared by the examples of a ``vmap``, gets it once per call.
    rhs_dilation / kernel_dilation: kernel dilation (either name; an int or two ints).
    name: the layer's name, used in error messages only.
    mask_source: ``None`` (masks from ``w``) or an array of ``w``'s shape to compute the masks
      from, as in :func:`nmsparse.nm_dense`.
    permutation: ``bimask`` only: int32 ``[O]``, as in :func:`nmsparse.nm_dense`.

  Returns:
    ``[N, H', W', O]`` in ``x``'s dtype.

  Raises:
    ValueError: as :func:`nmsparse.nm_dense`, non-4-D operands, or other than two strides,
      dilations or padding pairs.
    TypeError: an unknown keyword argument.
  """
  check_float("x", x)
  check_float("w", w)
  dims = ConvDims.create(x.shape, w.shape, strides, padding,
                         rhs_dilation if rhs_dilation is not None else kernel_dilation)
  if method == "dense":
    return dims.conv(x, w.astype(x.dtype))
  src, given = sparse_operands(w, mask_source, name)
  perm = check_permutation(w, permutation, method, name)
  cfg = make_config(w.shape, pattern, method, sr_ste_lambda, implementation, name, op="conv",
                    x_shape=x.shape, dtype=x.dtype, given_mask_source=given, geom=dims,
                    given_permutation=perm is not None)
  return _nm_conv(x, w, src, perm, cfg, dims)
