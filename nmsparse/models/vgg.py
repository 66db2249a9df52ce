"""VGG with batch norm (VGG19-BN by default) for 32x32 inputs: 3x3 conv/BN/ReLU stacks, max pools,
one linear classifier (the common CIFAR variant). The first conv is ``conv_init``, the classifier
``head``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nmsparse.models.resnet import ModuleDef, batch_norm

# Channel counts per conv, "M" = 2x2 max pool.
VGG19_LAYERS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG(nn.Module):
  """VGG-BN; ``layers`` lists conv widths and ``"M"`` pools; ``width_scale`` shrinks all widths."""

  num_classes: int
  layers: Sequence[int | str] = VGG19_LAYERS
  width_scale: float = 1.0
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    x = jnp.asarray(x, self.dtype)
    index = 0
    for spec in self.layers:
      if spec == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      name = "conv_init" if index == 0 else f"conv{index}"
      x = self.conv(int(spec * self.width_scale), (3, 3), use_bias=False, name=name)(x)
      x = nn.relu(batch_norm(train, self.dtype, name=f"bn{index}")(x))
      index += 1
    x = jnp.mean(x, axis=(1, 2))
    x = self.dense(self.num_classes, name="head")(x)
    return jnp.asarray(x, jnp.float32)
