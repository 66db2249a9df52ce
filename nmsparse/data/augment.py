"""On-device augmentation under jit: crop with zero padding, flip, normalisation, and the recipes'
cutout, RandAugment and mixup/CutMix. Pure functions of an explicit PRNG key (a seed fixes a batch).
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


def cutout(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """Zeroes one ``size x size`` square per image, centred uniformly anywhere and clipped at the
  borders (DeVries & Taylor 2017); on normalised images, so the patch is the mean colour."""
  n, h, w, _ = images.shape
  cy, cx = (jax.random.randint(k, (n, 1, 1), 0, d) for k, d in zip(jax.random.split(key), (h, w)))
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  lo = size // 2
  inside = ((rows >= cy - lo) & (rows < cy - lo + size) & (cols >= cx - lo) &
            (cols < cx - lo + size))
  return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def mix_batch(key: jax.Array, images: jax.Array, targets: jax.Array, mixup_alpha: float,
              cutmix_alpha: float, switch_prob: float) -> tuple[jax.Array, jax.Array]:
  """Mixup or CutMix of the batch with its reverse (timm's ``Mixup``, batch mode).

  One ``lam ~ Beta(alpha, alpha)`` per batch; with both alphas set, CutMix is chosen with
  probability ``switch_prob``. CutMix pastes a box of area ``1 - lam`` (clipped) and corrects
  ``lam`` to the pasted area. Returns the images and ``lam * t + (1 - lam) * t[::-1]``.
  """
  n, h, w, _ = images.shape
  k_mix, k_cut, k_switch, k_box = jax.random.split(key, 4)
  use_cut = jnp.asarray(cutmix_alpha > 0 and (mixup_alpha <= 0 or switch_prob >= 1), bool)
  if cutmix_alpha > 0 and mixup_alpha > 0 and switch_prob < 1:
    use_cut = jax.random.bernoulli(k_switch, switch_prob)
  lam_mix = jax.random.beta(k_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else 1.0
  lam_cut = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else 1.0
  cut = jnp.sqrt(1.0 - lam_cut)
  cy, cx = (jax.random.randint(k, (), 0, d) for k, d in zip(jax.random.split(k_box), (h, w)))
  y0, y1 = jnp.clip(cy - (cut * h / 2).astype(jnp.int32), 0, h), jnp.clip(
      cy + (cut * h / 2).astype(jnp.int32), 0, h)
  x0, x1 = jnp.clip(cx - (cut * w / 2).astype(jnp.int32), 0, w), jnp.clip(
      cx + (cut * w / 2).astype(jnp.int32), 0, w)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  lam_box = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
  partner = images[::-1]
  cut_images = jnp.where(box[None, :, :, None], partner, images)
  mixed = (lam_mix * images.astype(jnp.float32) +
           (1.0 - lam_mix) * partner.astype(jnp.float32)).astype(images.dtype)
  lam = jnp.where(use_cut, lam_box, lam_mix)
  out = jnp.where(use_cut, cut_images, mixed)
  return out, lam * targets + (1.0 - lam) * targets[::-1]


def _affine(image: jax.Array, matrix: jax.Array) -> jax.Array:
  """Nearest-neighbour ``image[matrix @ (y, x, 1)]`` about the centre, zero fill (uint8 HWC)."""
  h, w, _ = image.shape
  ys, xs = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")
  src = jnp.einsum("ij,jhw->ihw", matrix, jnp.stack([ys, xs, jnp.ones_like(ys)]))
  sy = jnp.round(src[0] + (h - 1) / 2).astype(jnp.int32)
  sx = jnp.round(src[1] + (w - 1) / 2).astype(jnp.int32)
  ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
  out = image[jnp.clip(sy, 0, h - 1), jnp.clip(sx, 0, w - 1)]
  return jnp.where(ok[..., None], out, jnp.zeros((), image.dtype))


def _blend(a: jax.Array, b: jax.Array, factor: jax.Array) -> jax.Array:
  """``b + factor * (a - b)`` clipped to uint8 (PIL's ImageEnhance)."""
  return jnp.clip(b + factor * (a - b), 0, 255)


def _rand_op(key: jax.Array, image: jax.Array, magnitude: float) -> jax.Array:
  """One RandAugment op, chosen uniformly, at ``magnitude / 10`` of its range (random sign)."""
  k_op, k_sign = jax.random.split(key)
  m = magnitude / 10.0 * jnp.where(jax.random.bernoulli(k_sign), 1.0, -1.0)
  x = image.astype(jnp.float32)
  gray = jnp.mean(x, axis=-1, keepdims=True)
  lo, hi = jnp.min(x, axis=(0, 1)), jnp.max(x, axis=(0, 1))
  angle = m * 30.0 * jnp.pi / 180.0
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  h, w, _ = image.shape
  affine = lambda a: _affine(image, jnp.asarray(a, jnp.float32)).astype(jnp.float32)
  blur = (x + jnp.roll(x, 1, 0) + jnp.roll(x, -1, 0) + jnp.roll(x, 1, 1) + jnp.roll(x, -1, 1)) / 5
  ops = [
      lambda: x,  # identity
      lambda: (x - lo) * 255.0 / jnp.maximum(hi - lo, 1.0),  # autocontrast
      lambda: affine([[cos, -sin, 0.0], [sin, cos, 0.0]]),  # rotate up to 30 degrees
      lambda: jnp.where(x >= 256.0 - jnp.abs(m) * 256.0, 255.0 - x, x),  # solarize
      lambda: _blend(x, gray, 1.0 + 0.9 * m),  # color
      lambda: jnp.floor(x / 2 ** jnp.round(4 * jnp.abs(m))) * 2 ** jnp.round(4 * jnp.abs(m)),  # posterize
      lambda: _blend(x, jnp.mean(gray), 1.0 + 0.9 * m),  # contrast
      lambda: _blend(x, jnp.zeros_like(x), 1.0 + 0.9 * m),  # brightness
      lambda: _blend(x, blur, 1.0 + 0.9 * m),  # sharpness
      lambda: affine([[1.0, 0.0, 0.0], [0.3 * m, 1.0, 0.0]]),  # shear x
      lambda: affine([[1.0, 0.3 * m, 0.0], [0.0, 1.0, 0.0]]),  # shear y
      lambda: affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.45 * m * w]]),  # translate x
      lambda: affine([[1.0, 0.0, 0.45 * m * h], [0.0, 1.0, 0.0]]),  # translate y
  ]
  return lax.switch(jax.random.randint(k_op, (), 0, len(ops)), ops).astype(image.dtype)


RAND_AUGMENT_OPS = 13


def rand_augment(key: jax.Array, images: jax.Array, num_ops: int, magnitude: float) -> jax.Array:
  """RandAugment (Cubuk et al. 2020) on uint8 images: ``num_ops`` ops per image, each drawn from
  the 13 of :func:`_rand_op` (identity, autocontrast, rotate, solarize, color, posterize, contrast,
  brightness, sharpness, shear x/y, translate x/y) at ``magnitude`` in [0, 10]."""
  keys = jax.random.split(key, (images.shape[0], num_ops))
  def per_image(image, ks):
    for i in range(num_ops):
      image = _rand_op(ks[i], image, magnitude)
    return image
  return jax.vmap(per_image)(images, keys)


def augment_active(cfg: Any) -> bool:
  """Whether a config's ``augment`` block (cutout, RandAugment, mixup/CutMix) does anything."""
  cfg = cfg or {}
  return bool(cfg.get("cutout", 0) or cfg.get("randaugment_ops", 0) or
              cfg.get("mixup_alpha", 0.0) or cfg.get("cutmix_alpha", 0.0))


def recipe_augment(key: jax.Array, images: jax.Array, mean: jax.Array, std: jax.Array, *, pad: int,
                   flip: bool, dtype: Any, cutout_size: int = 0, randaugment_ops: int = 0,
                   randaugment_magnitude: float = 0.0) -> jax.Array:
  """:func:`augment` with the recipe steps: crop/flip, RandAugment (uint8), normalise, cutout."""
  k_crop, k_rand, k_cut = jax.random.split(key, 3)
  images = random_crop_flip(k_crop, images, pad, flip)
  if randaugment_ops:
    images = rand_augment(k_rand, images, randaugment_ops, randaugment_magnitude)
  x = normalize(images, mean, std, dtype)
  return cutout(k_cut, x, cutout_size) if cutout_size else x
