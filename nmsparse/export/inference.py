"""Running a model from its exported tree: dense/conv layers that read a packed forward operand,
swapped into the model through its injectable ``dense``/``conv`` fields."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nmsparse.export.tree import PACKED, Exported
from nmsparse import native
from nmsparse.kernels import nm_matmul, reference_nm_matmul
from nmsparse.kernels import value_serial
from nmsparse.layer_args import conv_layer_args, flatten_images
from nmsparse.ops.cards import CardRule, native_decode_max_rows
from nmsparse.ops.config import ConvDims
from nmsparse.ops.pallas import KERNEL_M
from nmsparse.pack import PackedNM, unpack


def decode_path(k: int, o: int, pattern, rows: int, rule: CardRule | None = None,
                dtype=jnp.bfloat16) -> str:
  """The path ``implementation=None`` takes for ``x [rows, k] @ W [k, o]`` of an exported layer:
  ``"native"`` (:func:`nmsparse.kernels.value_serial.vs_matmul` on the packed operand) where the
  card (``rule``, default this one's: ``nmsparse/ops/cards.py``) measured it faster than dense at
  this pattern and row count and the extension is loaded, else ``"dense"``."""
  del k, o  # the measured rule is per pattern and row count (benchmarks/h200_decode.md)
  if rows > native_decode_max_rows(pattern, rule) or jnp.dtype(dtype) != jnp.bfloat16:
    return "dense"
  return "native" if native.status() is None else "dense"


def packed_matmul(x: jax.Array, packed: PackedNM) -> jax.Array:
  """``x @ unpack(packed)`` for ``[..., K]`` activations: the native value-serial kernel where
  :func:`decode_path` says ``"native"``; else the Pallas ``nm_matmul`` kernel (interpreted
  off-GPU) for ``M in (2, 4, 8)``, its jnp reference for other M."""
  lead = x.shape[:-1]
  rows = int(np.prod(lead))
  k, o = packed.shape
  if (decode_path(k, o, packed.pattern, rows, dtype=x.dtype) == "native"
      and value_serial.unsupported(x.dtype, packed) is None):
    matmul = value_serial.vs_matmul
  else:
    matmul = nm_matmul if packed.pattern.m in KERNEL_M else reference_nm_matmul
  y = matmul(x.reshape(-1, x.shape[-1]), packed)
  return y.reshape(lead + (packed.shape[1],))


class _PackedMixin:
  """The packed operand of this layer, if the exported variables hold one."""

  def packed_operand(self, in_features: int, ndim: int) -> PackedNM | None:
    """``packed/<module path>/kernel`` checked against the layer, or ``None`` (a dense layer)."""
    if not self.has_variable(PACKED, "kernel"):
      return None
    packed = self.get_variable(PACKED, "kernel")
    shape = packed.shape
    if len(shape) != ndim or shape[-2:] != (in_features, self.features):
      path = "/".join(self.path)
      raise ValueError(f"Layer {path!r} takes {in_features} input features to {self.features} "
                       f"outputs (a rank-{ndim} kernel), but its packed kernel has shape {shape}: "
                       "the exported tree belongs to another model.")
    return packed


class PackedDense(_PackedMixin, nn.Dense):
  """``nn.Dense`` for exported models: with a packed kernel it computes ``x @ unpack(kernel)`` in
  the packed values' dtype (:func:`packed_matmul`), plus the stock ``bias``; without, it is
  ``nn.Dense``."""

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    packed = self.packed_operand(jnp.shape(inputs)[-1], 2)
    if packed is None:
      return super().__call__(inputs)
    dtype = packed.values.dtype
    y = packed_matmul(jnp.asarray(inputs, dtype), packed)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, dtype)
    return y


class PackedConv(_PackedMixin, nn.Conv):
  """``nn.Conv`` (2-D, NHWC) for exported models: a packed HWIO kernel is unpacked to the masked
  kernel ``W * M_ff`` (in the values' dtype) and fed to ``lax.conv``; without one it is ``nn.Conv``.

  The value-serial saving is for dense products at small batch: a conv reads its unpacked kernel.
  """

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    packed = self.packed_operand(jnp.shape(inputs)[-1], 4)
    if packed is None:
      return super().__call__(inputs)
    name = "/".join(self.path)
    args = conv_layer_args(name, self.kernel_size, self.strides, self.padding,
                           self.kernel_dilation, self.input_dilation, self.feature_group_count,
                           shared_weights=self.shared_weights, mask=self.mask)
    x, restore_batch = flatten_images(inputs)
    kernel = unpack(packed)
    dtype = kernel.dtype
    if kernel.shape[:2] != args.kernel_size:
      raise ValueError(f"Conv {name!r} has kernel_size {args.kernel_size}, but its packed kernel "
                       f"has shape {kernel.shape}: the exported tree belongs to another model.")
    dims = ConvDims.create(x.shape, kernel.shape, args.strides, args.padding, args.kernel_dilation)
    y = dims.conv(jnp.asarray(x, dtype), kernel)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, dtype)
    return restore_batch(y)


def _swap(layer: Any, replacement: type[nn.Module], stock: type[nn.Module]) -> Any:
  """``replacement`` with the stock settings (dtype, param_dtype, ...) the injected layer carries."""
  fields = {f.name for f in dataclasses.fields(stock)}
  kwargs = layer.keywords if isinstance(layer, functools.partial) else {}
  return functools.partial(replacement, **{k: v for k, v in kwargs.items() if k in fields})


def inference_model(model: nn.Module) -> nn.Module:
  """``model`` with its injected ``dense``/``conv`` layers replaced by :class:`PackedDense` /
  :class:`PackedConv` carrying the same stock settings; parameter paths stay the same.

  Raises:
    ValueError: if the model has no ``dense`` or ``conv`` field (see ``nmsparse.models``).
  """
  missing = [f for f in ("dense", "conv") if not hasattr(model, f)]
  if missing:
    raise ValueError(f"{type(model).__name__} has no injectable {' or '.join(missing)} layer "
                     "field; exported models run through the nmsparse.models interface.")
  return model.clone(dense=_swap(model.dense, PackedDense, nn.Dense),
                     conv=_swap(model.conv, PackedConv, nn.Conv))


def apply(model: nn.Module, exported: Exported | Mapping[str, Any], *args: Any,
          **kwargs: Any) -> Any:
  """Runs ``model`` (the training model, or one built the same way) from ``exported`` (an
  :class:`Exported` or its ``variables``, e.g. as an argument of a jitted function):
  ``inference_model(model).apply(variables, *args, **kwargs)``; pass ``train=False`` to
  ``nmsparse.models``. Outputs equal the masked dense model's within the shared tolerance."""
  variables = exported.variables if isinstance(exported, Exported) else exported
  return inference_model(model).apply(variables, *args, **kwargs)
