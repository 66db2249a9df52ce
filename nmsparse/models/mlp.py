"""A small MLP for flattened images (the quickstart's digits model): hidden layers ``hidden_*``,
classifier ``head``."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nmsparse.models.resnet import ModuleDef


class MLP(nn.Module):
  """Flatten -> [dense -> ReLU] per ``features`` -> dense head."""

  num_classes: int
  features: Sequence[int] = (256, 256)
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    del train
    x = jnp.asarray(x, self.dtype).reshape(x.shape[0], -1)
    for i, width in enumerate(self.features):
      x = nn.relu(self.dense(width, name=f"hidden_{i}")(x))
    return jnp.asarray(self.dense(self.num_classes, name="head")(x), jnp.float32)
