"""Flax layer settings normalised to what the sparse ops take: pairs, padding, dtype, batch axes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, Union

import jax.numpy as jnp

Padding = Union[str, Sequence[tuple[int, int]]]


def pairs(value: Any, what: str) -> tuple[int, int]:
  """``None`` -> ``(1, 1)``, an int ``k`` -> ``(k, k)``, a pair passes through.

  Raises:
    ValueError: anything but one or two values (sparse convs are 2-D).
  """
  value = 1 if value is None else value
  value = (value, value) if isinstance(value, int) else tuple(value)
  if len(value) != 2:
    raise ValueError(f"Sparse convs are 2-D: {what} needs 1 or 2 values, got {value}.")
  return tuple(int(v) for v in value)


def explicit_padding(padding: Any, what: str) -> Padding:
  """``"SAME"``/``"VALID"`` (any case), an int ``p`` -> ``((p, p), (p, p))``, or per-axis pairs.

  Raises:
    ValueError: another padding mode, or padding for other than two spatial axes.
  """
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"{what} supports SAME, VALID or explicit padding, got {padding!r}.")
    return padding.upper()
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
  if len(padding) != 2 or any(len(p) != 2 for p in padding):
    raise ValueError(f"Sparse convs are 2-D: {what} needs two (lo, hi) pairs, got {padding}.")
  return tuple((int(lo), int(hi)) for lo, hi in padding)


@dataclasses.dataclass(frozen=True)
class ConvLayerArgs:
  """A conv layer's settings normalised to what :func:`nmsparse.nm_conv` takes (2-D)."""

  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: Padding
  kernel_dilation: tuple[int, int]


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
  if pairs(input_dilation, f"input_dilation of {name!r}") != (1, 1):
    raise ValueError(f"Sparse conv {name!r} does not support input_dilation={input_dilation}; "
                     f"keep it dense with a layer rule.")
  if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID"):
    raise ValueError(f"Sparse conv {name!r} supports SAME, VALID or explicit padding, got "
                     f"{padding!r}; keep it dense with a layer rule.")
  return ConvLayerArgs(pairs(kernel_size, f"kernel_size of {name!r}"),
                       pairs(strides, f"strides of {name!r}"),
                       explicit_padding(padding, f"Sparse conv {name!r}"),
                       pairs(kernel_dilation, f"kernel_dilation of {name!r}"))


def compute_dtype(dtype: Any, inputs: Any, kernel: Any) -> Any:
  """The layer's ``dtype`` if set, else the promoted dtype of inputs and kernel (Flax's rule)."""
  return dtype if dtype is not None else jnp.result_type(inputs, kernel)


def flatten_images(
    inputs: jnp.ndarray) -> tuple[jnp.ndarray, Callable[[jnp.ndarray], jnp.ndarray]]:
  """``[*batch, H, W, C]`` -> ``[N, H, W, C]`` and the function that restores the batch axes.

  Flax convs take any number of leading batch axes (or none); :func:`nmsparse.nm_conv` takes one.
  """
  batch_shape = inputs.shape[:-3]
  if len(batch_shape) == 1:
    return inputs, lambda y: y
  x = inputs.reshape((-1,) + inputs.shape[-3:])
  return x, lambda y: y.reshape(batch_shape + y.shape[1:])
