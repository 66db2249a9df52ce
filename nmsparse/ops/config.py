"""Static settings of one sparse op call, as frozen (hashable) dataclasses: primitive parameters."""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

from jax import lax

from nmsparse.types import NMPattern, check_method

Padding = Union[str, Sequence[tuple[int, int]]]


@dataclasses.dataclass(frozen=True)
class NMConfig:
  """What to prune and how: the N:M pattern, the method, the SR-STE decay, the lowering."""

  pattern: NMPattern
  method: str
  sr_ste_lambda: float
  implementation: str

  def __post_init__(self):
    check_method(self.method)


@dataclasses.dataclass(frozen=True)
class ConvDims:
  """A 2-D NHWC x HWIO convolution's geometry, padding already resolved to explicit pairs."""

  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  rhs_dilation: tuple[int, int]

  @classmethod
  def create(cls, x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int],
             padding: Padding, rhs_dilation: Sequence[int] | None) -> "ConvDims":
    strides = tuple(int(s) for s in strides)
    rhs_dilation = (1, 1) if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    if len(x_shape) != 4 or len(w_shape) != 4:
      raise ValueError(f"nm_conv takes NHWC inputs and HWIO kernels; got x {tuple(x_shape)} and "
                       f"w {tuple(w_shape)}.")
    if x_shape[-1] != w_shape[2]:
      raise ValueError(f"nm_conv: input channels {x_shape[-1]} of x {tuple(x_shape)} do not match "
                       f"axis 2 of the HWIO kernel {tuple(w_shape)}.")
    if isinstance(padding, str):
      window = [(k - 1) * d + 1 for k, d in zip(w_shape[:2], rhs_dilation)]
      pads = lax.padtype_to_pads(tuple(x_shape[1:3]), window, strides, padding)
    else:
      pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return cls(strides, pads, rhs_dilation)

  def conv(self, x, w, preferred_element_type=None):
    """The plain convolution with this geometry (``lax.conv_general_dilated``)."""
    return lax.conv_general_dilated(
        x, w, window_strides=self.strides, padding=self.padding, rhs_dilation=self.rhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=preferred_element_type)
