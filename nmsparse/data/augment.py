"""On-device augmentation under jit: random crop with zero padding, horizontal flip, normalisation.

Pure functions of an explicit PRNG key, so a seed fixes every augmented batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array, dtype: Any) -> jax.Array:
  """uint8 images -> ``(x / 255 - mean) / std`` in ``dtype``."""
  x = images.astype(jnp.float32) / 255.0
  return ((x - mean) / std).astype(dtype)


def random_crop_flip(key: jax.Array, images: jax.Array, pad: int, flip: bool) -> jax.Array:
  """Per-image random ``H x W`` crop of the zero-padded images and a random left-right flip."""
  n, h, w, c = images.shape
  crop_key, flip_key = jax.random.split(key)
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    images = jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(padded,
                                                                                       offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1], images)
  return images


def augment(key: jax.Array, images: jax.Array, mean: jax.Array, std: jax.Array, *, pad: int,
            flip: bool, dtype: Any) -> jax.Array:
  """Training-time input: crop/flip uint8 images, then normalise to ``dtype``."""
  return normalize(random_crop_flip(key, images, pad, flip), mean, std, dtype)
