"""ResNets for CIFAR and ImageNet: ResNet9 (the fast CIFAR ResNet), ResNet18/34 (basic blocks) and
ResNet50 (bottlenecks), with a CIFAR stem (3x3 conv) or an ImageNet stem (7x7/2 conv + max pool).

Dense and conv layer classes are injected (``dense=``, ``conv=``) so the same definition trains dense
or N:M sparse; the stem conv is named ``conv_init`` and the classifier ``head`` (default rules keep
both dense).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


def batch_norm(train: bool, dtype: Any, name: str | None = None, zero_init: bool = False) -> nn.Module:
  """BatchNorm with the momentum/epsilon of the reference CIFAR/ImageNet recipes."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
                      name=name)


class ConvBN(nn.Module):
  """conv -> BN -> ReLU (optionally followed by a 2x2 max pool), the ResNet9 building block."""

  features: int
  conv: ModuleDef
  dtype: Any = jnp.float32
  pool: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = self.conv(self.features, (3, 3), use_bias=False, name="conv")(x)
    if self.pool:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = batch_norm(train, self.dtype, name="bn")(x)
    return nn.relu(x)


class ResNet9(nn.Module):
  """The fast CIFAR ResNet9 (Page, "How to train your ResNet"): prep, 3 stages, 2 residual blocks.

  ``width`` is the prep-layer width (64 in the reference); stages use 2x, 4x, 8x of it.
  """

  num_classes: int
  width: int = 64
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv
  dtype: Any = jnp.float32
  head_scale: float = 0.125

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    block = functools.partial(ConvBN, conv=self.conv, dtype=self.dtype)
    w = self.width
    x = jnp.asarray(x, self.dtype)
    x = self.conv(w, (3, 3), use_bias=False, name="conv_init")(x)
    x = nn.relu(batch_norm(train, self.dtype, name="bn_init")(x))
    x = block(2 * w, pool=True, name="layer1")(x, train)
    r = block(2 * w, name="layer1_res1")(x, train)
    x = x + block(2 * w, name="layer1_res2")(r, train)
    x = block(4 * w, pool=True, name="layer2")(x, train)
    x = block(8 * w, pool=True, name="layer3")(x, train)
    r = block(8 * w, name="layer3_res1")(x, train)
    x = x + block(8 * w, name="layer3_res2")(r, train)
    x = jnp.max(x, axis=(1, 2))
    x = self.dense(self.num_classes, use_bias=False, name="head")(x)
    return jnp.asarray(x, jnp.float32) * self.head_scale


class BasicBlock(nn.Module):
  """Two 3x3 convs with an identity or 1x1-projection shortcut (ResNet18/34)."""

  features: int
  strides: int
  conv: ModuleDef
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = self.conv(self.features, (3, 3), (self.strides, self.strides), use_bias=False,
                  name="conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
    y = self.conv(self.features, (3, 3), use_bias=False, name="conv2")(y)
    y = batch_norm(train, self.dtype, name="bn2", zero_init=True)(y)
    return nn.relu(y + _shortcut(self, x, self.features, train))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a projection shortcut when needed (ResNet50)."""

  features: int
  strides: int
  conv: ModuleDef
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    y = self.conv(self.features, (1, 1), use_bias=False, name="conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
    y = self.conv(self.features, (3, 3), (self.strides, self.strides), use_bias=False,
                  name="conv2")(y)
    y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
    y = self.conv(4 * self.features, (1, 1), use_bias=False, name="conv3")(y)
    y = batch_norm(train, self.dtype, name="bn3", zero_init=True)(y)
    return nn.relu(y + _shortcut(self, x, 4 * self.features, train))


def _shortcut(block: nn.Module, x: jnp.ndarray, out_features: int, train: bool) -> jnp.ndarray:
  if x.shape[-1] == out_features and block.strides == 1:
    return x
  x = block.conv(out_features, (1, 1), (block.strides, block.strides), use_bias=False,
                 name="proj_conv")(x)
  return batch_norm(train, block.dtype, name="proj_bn")(x)


class ResNet(nn.Module):
  """ResNet with ``stage_sizes`` blocks per stage (widths ``width * 2**i``).

  ``stem="cifar"``: 3x3/1 conv, no pool (32x32 inputs). ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max
  pool.
  """

  stage_sizes: Sequence[int]
  block: Callable[..., nn.Module]
  num_classes: int
  width: int = 64
  stem: str = "cifar"
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    x = jnp.asarray(x, self.dtype)
    if self.stem == "cifar":
      x = self.conv(self.width, (3, 3), use_bias=False, name="conv_init")(x)
      x = nn.relu(batch_norm(train, self.dtype, name="bn_init")(x))
    elif self.stem == "imagenet":
      x = self.conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    name="conv_init")(x)
      x = nn.relu(batch_norm(train, self.dtype, name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"ResNet stem must be 'cifar' or 'imagenet', got {self.stem!r}.")
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, strides, conv=self.conv, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j + 1}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = self.dense(self.num_classes, name="head")(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck)
