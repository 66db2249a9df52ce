"""Data sources (arrays layout, image folder, digits, synthetic) and on-device augmentation."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nmsparse.data import (DatasetNotFoundError, augment, load_arrays, load_dataset,
                           load_image_folder, load_sklearn_digits, random_crop_flip)


def write_arrays(root, name="cifar10", n_train=6, n_test=4):
  folder = os.path.join(root, name)
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  arrays = {"train_images": rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
  for key, value in arrays.items():
    np.save(os.path.join(folder, f"{key}.npy"), value)
  return arrays


def test_array_layout_round_trip(tmp_path):
  arrays = write_arrays(str(tmp_path))
  ds = load_arrays(str(tmp_path), "cifar10", 10)
  np.testing.assert_array_equal(ds.train_images, arrays["train_images"])
  np.testing.assert_array_equal(ds.test_labels, arrays["test_labels"].astype(np.int32))
  assert ds.train_labels.dtype == np.int32 and ds.image_shape == (8, 8, 3)
  mean, std = ds.channel_stats()
  np.testing.assert_allclose(mean, arrays["train_images"].reshape(-1, 3).mean(0) / 255, rtol=1e-5)
  np.testing.assert_allclose(std, arrays["train_images"].reshape(-1, 3).std(0) / 255, rtol=1e-4)


def test_missing_dataset_says_what_to_put_where_and_never_substitutes(tmp_path):
  cfg = ml_collections.ConfigDict(dict(source="arrays", name="cifar10", data_dir=str(tmp_path),
                                       num_classes=10))
  with pytest.raises(DatasetNotFoundError) as err:
    load_dataset(cfg)
  message = str(err.value)
  assert "train_images.npy" in message and "unpack.py" in message and str(tmp_path) in message


def test_labels_out_of_range_rejected(tmp_path):
  write_arrays(str(tmp_path))
  with pytest.raises(ValueError, match="labels span"):
    load_arrays(str(tmp_path), "cifar10", 2)


def test_image_folder(tmp_path):
  from PIL import Image
  for split in ("train", "val"):
    for cls, color in (("ant", 10), ("bee", 200)):
      os.makedirs(tmp_path / split / cls)
      Image.fromarray(np.full((12, 10, 3), color, np.uint8)).save(tmp_path / split / cls / "a.png")
  ds = load_image_folder(str(tmp_path), image_size=8)
  assert ds.train_images.shape == (2, 8, 8, 3) and ds.num_classes == 2
  np.testing.assert_array_equal(ds.train_labels, [0, 1])
  assert ds.train_images[1].min() == 200


def test_digits_is_real_bundled_data():
  ds = load_sklearn_digits()
  assert ds.train_images.shape[1:] == (8, 8, 1) and ds.num_classes == 10
  assert len(ds.train_labels) + len(ds.test_labels) == 1797
  assert set(np.unique(ds.test_labels)) == set(range(10))


def test_augmentation_deterministic_per_key_and_valid():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
  f = jax.jit(lambda k: random_crop_flip(k, images, pad=2, flip=True))
  a, b, c = f(jax.random.key(1)), f(jax.random.key(1)), f(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == images.shape and a.dtype == jnp.uint8
  # Every output row is a (possibly flipped) window of the zero-padded input.
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(16):
    windows = [padded[i, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
    windows += [w[:, ::-1] for w in windows]
    assert any(np.array_equal(np.asarray(a[i]), w) for w in windows)


def test_normalised_output():
  images = jnp.full((4, 8, 8, 3), 255, jnp.uint8)
  out = augment(jax.random.key(0), images, jnp.full(3, 0.5), jnp.full(3, 0.25), pad=0, flip=False,
                dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), 2.0)


def test_tfds_source_is_a_clear_error_without_tfds_or_data(tmp_path):
  cfg = ml_collections.ConfigDict(dict(source="tfds", name="cifar10", data_dir=str(tmp_path),
                                       num_classes=10, image_size=32, test_split="test"))
  with pytest.raises(DatasetNotFoundError, match="cifar10"):
    load_dataset(cfg)


def test_synthetic_only_when_asked():
  cfg = ml_collections.ConfigDict(dict(source="synthetic", name="x", num_classes=3, image_size=4,
                                       channels=1, synthetic_train=5, synthetic_test=2,
                                       synthetic_seed=0))
  ds = load_dataset(cfg)
  assert ds.name == "synthetic" and ds.train_images.shape == (5, 4, 4, 1)
  with pytest.raises(ValueError, match="Unknown data.source"):
    load_dataset(ml_collections.ConfigDict(dict(source="cifar", name="x")))


@pytest.mark.parametrize("damage", ["truncated", "pickled"])
def test_a_damaged_npy_is_an_error_naming_the_file(tmp_path, damage):
  write_arrays(str(tmp_path))
  path = os.path.join(tmp_path, "cifar10", "train_images.npy")
  if damage == "truncated":
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    np.save(path, np.array([{"not": "an image"}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match="train_images.npy is not a readable .npy array"):
    load_arrays(str(tmp_path), "cifar10", 10)


def test_limits_take_the_first_examples_per_class_and_log_them(tmp_path):
  write_arrays(str(tmp_path), n_train=40, n_test=20)
  cfg = ml_collections.ConfigDict(dict(source="arrays", name="cifar10", data_dir=str(tmp_path),
                                       num_classes=10, train_limit=10, test_limit=5,
                                       limit_stratified=True))
  full = load_arrays(str(tmp_path), "cifar10", 10)
  ds = load_dataset(cfg)
  assert len(ds.train_labels) == 10 and len(ds.test_labels) == 5
  present = np.unique(full.train_labels)
  assert set(np.unique(ds.train_labels)) == set(present[:10])  # one per class first
  firsts = [int(np.flatnonzero(full.train_labels == c)[0]) for c in present]
  np.testing.assert_array_equal(ds.train_images, full.train_images[sorted(firsts)[:10]])
  cfg.limit_stratified = False
  ds = load_dataset(cfg)
  np.testing.assert_array_equal(ds.train_labels, full.train_labels[:10])
  np.testing.assert_array_equal(ds.test_images, full.test_images[:5])


def test_synthetic_data_refuses_a_data_dir(tmp_path):
  cfg = ml_collections.ConfigDict(dict(source="synthetic", name="x", num_classes=3, image_size=4,
                                       channels=1, synthetic_train=5, synthetic_test=2,
                                       data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match=r"data.source='synthetic' reads no files.*source=arrays"):
    load_dataset(cfg)


def test_smoke_configs_use_synthetic_data_without_a_data_dir():
  from experiments.config_io import load_config
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  config = load_config(os.path.join(root, "configs", "resnet9_cifar10.py:smoke"))
  assert config.data.source == "synthetic" and config.data.data_dir == ""
  assert load_dataset(config.data).name == "synthetic"
