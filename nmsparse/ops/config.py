"""Static settings of one sparse op call, as frozen (hashable) dataclasses: primitive parameters."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from jax import lax

from nmsparse.layer_args import Padding, explicit_padding, pairs
from nmsparse.types import NMPattern, check_method


@dataclasses.dataclass(frozen=True)
class NMConfig:
  """What to prune and how: the N:M pattern, the method, the SR-STE decay, the lowering.

  ``given_mask_source``: the primitives' mask-source operand is a kernel snapshot to compute the
  masks from (``mask_every > 1``). When False the operand is the kernel itself and every
  implementation ignores it, so the program is the one without a mask source.
  ``given_permutation`` (``bimask`` only): the primitives take one more operand after the mask
  source, the int32 output-axis permutation of the backward mask; False adds no operand.
  """

  pattern: NMPattern
  method: str
  sr_ste_lambda: float
  implementation: str
  given_mask_source: bool = False
  given_permutation: bool = False

  def __post_init__(self):
    check_method(self.method)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """What an implementation's ``supports`` is asked about: one sparse op call."""

  op: str  # "dense" or "conv"
  x_shape: tuple[int, ...]
  w_shape: tuple[int, ...]
  dtype: Any  # the compute dtype (x's)
  pattern: NMPattern
  method: str
  given_mask_source: bool
  geom: "ConvDims | None" = None  # a conv's geometry (None for dense)
  given_permutation: bool = False  # bimask with a backward-mask permutation operand


@dataclasses.dataclass(frozen=True)
class ConvDims:
  """A 2-D NHWC x HWIO convolution's geometry, padding already resolved to explicit pairs."""

  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  rhs_dilation: tuple[int, int]

  @classmethod
  def create(cls, x_shape: Sequence[int], w_shape: Sequence[int], strides: int | Sequence[int],
             padding: int | Padding, rhs_dilation: int | Sequence[int] | None) -> "ConvDims":
    """Checks the shapes and resolves strides, padding and dilation (ints as ``lax``/flax do).

    Raises:
      ValueError: non-4-D operands, mismatched channels, or other than two strides, dilations or
        padding pairs.
    """
    if len(x_shape) != 4 or len(w_shape) != 4:
      raise ValueError(f"nm_conv takes NHWC inputs and HWIO kernels; got x {tuple(x_shape)} and "
                       f"w {tuple(w_shape)}.")
    if x_shape[-1] != w_shape[2]:
      raise ValueError(f"nm_conv: input channels {x_shape[-1]} of x {tuple(x_shape)} do not match "
                       f"axis 2 of the HWIO kernel {tuple(w_shape)}.")
    strides = pairs(strides, "nm_conv strides")
    rhs_dilation = pairs(rhs_dilation, "nm_conv rhs_dilation")
    padding = explicit_padding(padding, "nm_conv padding")
    if isinstance(padding, str):
      window = [(k - 1) * d + 1 for k, d in zip(w_shape[:2], rhs_dilation)]
      padding = tuple(lax.padtype_to_pads(tuple(x_shape[1:3]), window, strides, padding))
    return cls(strides, tuple((int(lo), int(hi)) for lo, hi in padding), rhs_dilation)

  def conv(self, x, w, preferred_element_type=None):
    """The plain convolution with this geometry (``lax.conv_general_dilated``)."""
    return lax.conv_general_dilated(
        x, w, window_strides=self.strides, padding=self.padding, rhs_dilation=self.rhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=preferred_element_type)
