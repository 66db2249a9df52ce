"""Dataset sources, all returning uint8 NHWC arrays in host memory: the plain array layout of
``shared/data/unpack.py``, TFDS (lazy import), an image folder, scikit-learn's digits, and synthetic
data (only when a config asks for it). A missing dataset raises an error that says what to put where.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from absl import logging

ARRAY_FILES = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".JPEG")
# Where the CIFAR-10 decoder lives, relative to a checkout (shared/data/README.md); the README names
# the same path.
UNPACK_SCRIPT = "../shared/data/unpack.py"


class DatasetNotFoundError(FileNotFoundError):
  """The configured dataset is not where the config says; the message says what to put where."""


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """A labelled image dataset in host memory: uint8 ``[n, H, W, C]`` images, int32 labels."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    for split in ("train", "test"):
      images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{self.name} {split} images must be uint8 NHWC, got {images.dtype} "
                         f"{images.shape}.")
      if labels.shape != (images.shape[0],):
        raise ValueError(f"{self.name} {split}: {images.shape[0]} images but labels of shape "
                         f"{labels.shape}.")
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise ValueError(f"{self.name} {split} labels span [{labels.min()}, {labels.max()}], "
                         f"outside [0, {self.num_classes}).")

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

  def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training images, in [0, 1] units (for normalisation)."""
    x = self.train_images.reshape(-1, self.train_images.shape[-1])
    mean = x.mean(axis=0, dtype=np.float64) / 255.0
    sq = np.mean(np.square(x, dtype=np.float64), axis=0) / 255.0**2
    std = np.sqrt(np.maximum(sq - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def load_arrays(data_dir: str, name: str, num_classes: int) -> ArrayDataset:
  """Reads ``data_dir/name/{train,test}_{images,labels}.npy`` (the ``unpack.py`` layout)."""
  folder = os.path.join(os.path.expanduser(data_dir), name)
  paths = {key: os.path.join(folder, f"{key}.npy") for key in ARRAY_FILES}
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if missing:
    raise DatasetNotFoundError(
        f"Dataset {name!r} not found under data_dir={data_dir!r}: missing {', '.join(missing)}. "
        f"Put {', '.join(f'{k}.npy' for k in ARRAY_FILES)} (uint8 [n, H, W, C] images, integer "
        f"labels) in {folder}/; for CIFAR-10 run `python {UNPACK_SCRIPT} --out {data_dir}` "
        f"from the repository root (see shared/data/README.md), or set --config.data.data_dir.")
  arrays = {key: _load_npy(path) for key, path in paths.items()}
  logging.info("Loaded %s from %s: train %s, test %s", name, folder, arrays["train_images"].shape,
               arrays["test_images"].shape)
  return ArrayDataset(name, arrays["train_images"], arrays["train_labels"].astype(np.int32),
                      arrays["test_images"], arrays["test_labels"].astype(np.int32), num_classes)


def _load_npy(path: str) -> np.ndarray:
  """``np.load`` without pickles; a damaged or pickled file is a ``ValueError`` naming it."""
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{path} is not a readable .npy array ({e}). Write it again with np.save "
                     f"(plain uint8/integer arrays, no pickled objects), e.g. with "
                     f"`python {UNPACK_SCRIPT} --out DIR` for CIFAR-10.") from e


def limit(ds: ArrayDataset, train_limit: int = 0, test_limit: int = 0,
          stratified: bool = True) -> ArrayDataset:
  """The first ``train_limit`` / ``test_limit`` examples of each split (0 keeps the split whole).

  ``stratified`` takes them class by class in turn (the first example of every class, then the
  second, ...), so a small limit still covers every class; otherwise the first n in file order.
  """
  splits = {}
  for split, n in (("train", train_limit), ("test", test_limit)):
    images, labels = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
    if n and n < len(labels):
      if stratified:
        rank = np.zeros(len(labels), np.int64)
        for c in np.unique(labels):
          rank[labels == c] = np.arange(np.sum(labels == c))
        keep = np.sort(np.lexsort((np.arange(len(labels)), rank))[:n])
      else:
        keep = np.arange(n)
      logging.info("data.%s_limit=%d: using %d of the %d %s examples (%s; per class %s).", split,
                   n, n, len(labels), split, "stratified" if stratified else "first in file order",
                   np.bincount(labels[keep], minlength=ds.num_classes).tolist())
      images, labels = images[keep], labels[keep]
    splits[split] = (images, labels)
  return ArrayDataset(ds.name, *splits["train"], *splits["test"], ds.num_classes)


def load_tfds(name: str, data_dir: str | None, num_classes: int, image_size: int | None = None,
              test_split: str = "test") -> ArrayDataset:
  """Loads a TFDS dataset that is already prepared locally (never downloads) into memory."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DatasetNotFoundError(
        f"data.source='tfds' needs tensorflow-datasets (pip install 'nmsparse[tfds]') and the "
        f"prepared dataset {name!r} in data_dir={data_dir!r}.") from e
  splits = {}
  for split in ("train", test_split):
    try:
      images, labels = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True,
                                               data_dir=data_dir, download=False))
    except Exception as e:  # tfds raises several types for missing data
      raise DatasetNotFoundError(
          f"TFDS dataset {name!r} split {split!r} is not prepared in data_dir={data_dir!r}: {e}. "
          f"Prepare it with `tfds build {name} --data_dir DIR` on a machine with network access.") from e
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
      images = _resize(images, image_size)
    splits[split] = (images.astype(np.uint8), labels.astype(np.int32))
  return ArrayDataset(name, *splits["train"], *splits[test_split], num_classes)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.stack([np.asarray(Image.fromarray(im.squeeze()).resize((size, size), Image.BILINEAR))
                   .reshape(size, size, -1) for im in images])


def load_image_folder(root: str, image_size: int, test_split: str = "val") -> ArrayDataset:
  """Reads ``root/train/<class>/*.png|jpg`` and ``root/<test_split>/<class>/...`` into memory.

  Class indices follow the sorted class folder names of ``train``. Images are converted to RGB and
  resized to ``image_size`` x ``image_size``. Meant for Tiny-ImageNet-sized data that fits in memory.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  train_dir = os.path.join(os.path.expanduser(root), "train")
  if not os.path.isdir(train_dir):
    raise DatasetNotFoundError(
        f"Image folder dataset not found: expected {train_dir}/<class name>/<image files> and "
        f"{os.path.join(root, test_split)}/<class name>/<image files>; set --config.data.data_dir.")
  classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
  splits = {}
  for split in ("train", test_split):
    images, labels = [], []
    for label, cls in enumerate(classes):
      folder = os.path.join(root, split, cls)
      if not os.path.isdir(folder):
        raise DatasetNotFoundError(f"Class folder {folder} is missing (classes come from {train_dir}).")
      for fname in sorted(os.listdir(folder)):
        if fname.endswith(IMAGE_SUFFIXES):
          with Image.open(os.path.join(folder, fname)) as im:
            images.append(np.asarray(im.convert("RGB").resize((image_size, image_size),
                                                              Image.BILINEAR)))
          labels.append(label)
    if not images:
      raise DatasetNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {root}/{split}/.")
    splits[split] = (np.stack(images).astype(np.uint8), np.asarray(labels, np.int32))
  return ArrayDataset(os.path.basename(os.path.normpath(root)), *splits["train"],
                      *splits[test_split], len(classes))


def load_sklearn_digits(test_fraction: float = 0.2) -> ArrayDataset:
  """scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download), as uint8
  ``[n, 8, 8, 1]``; a fixed stratified split."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    from sklearn.model_selection import train_test_split  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DatasetNotFoundError(
        "data.source='digits' reads scikit-learn's bundled digits: pip install scikit-learn "
        "(the 'test' extra has it: pip install -e '.[test]').") from e
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=test_fraction,
                                            random_state=0, stratify=labels)
  return ArrayDataset("digits", x_tr, y_tr, x_te, y_te, 10)


def synthetic(num_train: int, num_test: int, image_shape: tuple[int, int, int], num_classes: int,
              seed: int = 0) -> ArrayDataset:
  """Random uint8 images with random labels (for tests and timing only; never a substitute)."""
  rng = np.random.default_rng(seed)
  return ArrayDataset(
      "synthetic",
      rng.integers(0, 256, (num_train, *image_shape), dtype=np.uint8),
      rng.integers(0, num_classes, num_train).astype(np.int32),
      rng.integers(0, 256, (num_test, *image_shape), dtype=np.uint8),
      rng.integers(0, num_classes, num_test).astype(np.int32), num_classes)


def load_dataset(cfg: Any) -> ArrayDataset:
  """Dispatches on ``cfg.source`` (``arrays|tfds|folder|digits|synthetic``) of a ``config.data``,
  then applies ``train_limit`` / ``test_limit`` (:func:`limit`)."""
  ds = _load_source(cfg)
  if cfg.get("train_limit", 0) or cfg.get("test_limit", 0):
    ds = limit(ds, cfg.get("train_limit", 0), cfg.get("test_limit", 0),
               cfg.get("limit_stratified", True))
  return ds


def _load_source(cfg: Any) -> ArrayDataset:
  source = cfg.source
  if source == "arrays":
    return load_arrays(cfg.data_dir, cfg.name, cfg.num_classes)
  if source == "tfds":
    return load_tfds(cfg.name, cfg.data_dir or None, cfg.num_classes, cfg.image_size,
                     cfg.test_split)
  if source == "folder":
    return load_image_folder(cfg.data_dir, cfg.image_size, cfg.test_split)
  if source == "digits":
    return load_sklearn_digits()
  if source == "synthetic":
    if cfg.get("data_dir"):
      raise ValueError(
          f"data.source='synthetic' reads no files, but data.data_dir={cfg.data_dir!r} is set (a "
          "smoke config trains on synthetic data). To train on the data there, also set "
          "--config.data.source=arrays (and data.train_limit / data.test_limit for a quick run); "
          "for synthetic data, leave data.data_dir empty.")
    logging.warning("Using SYNTHETIC random data (data.source='synthetic'): accuracy is meaningless.")
    size = cfg.image_size
    return synthetic(cfg.synthetic_train, cfg.synthetic_test, (size, size, cfg.channels),
                     cfg.num_classes, cfg.synthetic_seed)
  raise ValueError(f"Unknown data.source {source!r}; use arrays, tfds, folder, digits or synthetic.")
