"""The recipe augmentations: cutout, mixup/CutMix soft targets, RandAugment, under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import resnet9_cifar10, vit_cifar10
from nmsparse.data.augment import (augment_active, cutout, mix_batch, rand_augment,
                                   recipe_augment)
from nmsparse.train.workdir import run_defining


def test_cutout_zeroes_one_clipped_square_per_image():
  x = jnp.ones((64, 32, 32, 3))
  out = np.asarray(jax.jit(cutout, static_argnums=2)(jax.random.key(0), x, 8))
  zeros = (out == 0).all(-1)
  counts = zeros.sum((1, 2))
  assert counts.max() == 64 and counts.min() >= 16  # 8x8, at worst clipped to a 4x4 corner
  for image in zeros:
    rows, cols = np.nonzero(image)
    assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == image.sum()


@pytest.mark.parametrize("mixup, cutmix, switch", [(0.8, 0.0, 0.5), (0.0, 1.0, 0.5),
                                                    (0.8, 1.0, 0.5)])
def test_mix_targets_match_the_mixed_pixels(mixup, cutmix, switch):
  n, classes = 8, 4
  images = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, 16, 16, 1))
  targets = jax.nn.one_hot(jnp.arange(n) % classes, classes)
  for seed in range(4):
    x, t = jax.jit(mix_batch, static_argnums=(3, 4, 5))(jax.random.key(seed), images, targets,
                                                        mixup, cutmix, switch)
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
    own = np.asarray(x[0]).mean()  # image 0 mixed with image n - 1: mean = (1 - lam) * (n - 1)
    lam = 1.0 - own / (n - 1)
    np.testing.assert_allclose(t[0, 0], lam, atol=1e-5)


def test_rand_augment_keeps_shape_dtype_and_is_seeded():
  images = jax.random.randint(jax.random.key(0), (16, 32, 32, 3), 0, 256).astype(jnp.uint8)
  fn = jax.jit(rand_augment, static_argnums=(2, 3))
  a, b = fn(jax.random.key(1), images, 2, 9.0), fn(jax.random.key(1), images, 2, 9.0)
  assert a.shape == images.shape and a.dtype == jnp.uint8
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(images)).any()
  c = fn(jax.random.key(2), images, 2, 9.0)
  assert (np.asarray(a) != np.asarray(c)).any()


def test_recipe_augment_normalises_and_cuts():
  images = jnp.full((4, 32, 32, 3), 200, jnp.uint8)
  # Jitted, as the train step runs it: eagerly, each of its ops compiles on its own (4.3 s, 1.4 s).
  fn = jax.jit(recipe_augment, static_argnames=("pad", "flip", "dtype", "cutout_size",
                                                 "randaugment_ops", "randaugment_magnitude"))
  x = fn(jax.random.key(0), images, jnp.zeros(3), jnp.ones(3), pad=4, flip=True,
         dtype=jnp.float32, cutout_size=8, randaugment_ops=1, randaugment_magnitude=5.0)
  assert x.shape == (4, 32, 32, 3) and x.dtype == jnp.float32 and float(x.max()) <= 1.0


def test_augment_off_by_default_and_run_defining_only_when_on():
  default = resnet9_cifar10.get_config()
  assert not augment_active(default.augment)
  assert "augment" not in run_defining(default)
  full = vit_cifar10.get_config("full")
  assert augment_active(full.augment) and run_defining(full)["augment"]["randaugment_ops"] == 2
  assert resnet9_cifar10.get_config("full").augment.cutout == 8


def test_a_recipe_run_trains_end_to_end(tmp_path):
  from nmsparse.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  c = resnet9_cifar10.get_config("smoke")
  c.method, c.pattern = "bimask", "2:8"
  c.augment.update(cutout=4, randaugment_ops=1, randaugment_magnitude=9.0, mixup_alpha=0.8,
                   cutmix_alpha=1.0)
  result = train_and_evaluate(c, str(tmp_path / "run"))
  assert 0.0 <= result["test_accuracy"] <= 1.0 and np.isfinite(result["history"][-1]["train_loss"])
