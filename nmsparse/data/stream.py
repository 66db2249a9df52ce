"""Streaming input on Grain: image-folder, ArrayRecord and TFDS records decoded and augmented on the
host (in worker processes), sharded per process, in an order fixed by (seed, epoch, process)."""

from __future__ import annotations

import dataclasses
import glob
import io
import math
import os
import struct
import zlib
from typing import Any, Iterator, Sequence

import numpy as np
from absl import flags, logging

from nmsparse.data.sources import IMAGE_SUFFIXES, DatasetNotFoundError

# Normalisation of the streamed sources (the usual ImageNet statistics): a stream has no in-memory
# training set to compute channel statistics from.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ON_CORRUPT = ("skip", "fail")
STREAM_SOURCES = ("folder", "arrayrecord", "tfds")
# How many following records a corrupt one may be replaced by before the run stops.
MAX_SUBSTITUTES = 64
_LABEL = struct.Struct("<I")


class CorruptImageError(ValueError):
  """A record does not decode as an image; the message names its path (file or record)."""


def encode_record(label: int, image_bytes: bytes) -> bytes:
  """One ArrayRecord record of this pipeline: the label as little-endian uint32, then the encoded
  image (JPEG/PNG bytes)."""
  return _LABEL.pack(label) + image_bytes


class FolderSource:
  """``root/<split>/<class>/<image>`` (ImageNet's layout); classes are the sorted folders of
  ``root/train``, files are sorted, so the record order is a function of the folder alone."""

  def __init__(self, root: str, split: str):
    root = os.path.expanduser(root)
    train_dir, split_dir = os.path.join(root, "train"), os.path.join(root, split)
    if not os.path.isdir(train_dir) or not os.path.isdir(split_dir):
      raise DatasetNotFoundError(
          f"Image folder dataset not found: expected {train_dir}/<class>/<images> and "
          f"{split_dir}/<class>/<images>; set --config.data.data_dir.")
    self.classes = sorted(d for d in os.listdir(train_dir)
                          if os.path.isdir(os.path.join(train_dir, d)))
    suffixes = tuple(s.lower() for s in IMAGE_SUFFIXES)
    paths, labels = [], []
    for label, cls in enumerate(self.classes):
      folder = os.path.join(split_dir, cls)
      if not os.path.isdir(folder):
        continue  # a class without images in this split (small validation sets)
      names = sorted(f for f in os.listdir(folder) if f.lower().endswith(suffixes))
      paths += [os.path.join(cls, f) for f in names]
      labels += [label] * len(names)
    if not paths:
      raise DatasetNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {split_dir}/.")
    self.root = split_dir
    # UTF-8 bytes in one numpy buffer: 1.28M ImageNet paths are ~40 MB, cheap to pickle to every
    # worker process.
    self.paths = np.asarray([p.encode("utf-8") for p in paths])
    self.labels = np.asarray(labels, np.int32)
    self.fingerprint = zlib.crc32("\n".join(paths).encode()) ^ zlib.crc32(self.labels.tobytes())

  def __len__(self) -> int:
    return len(self.paths)

  def read(self, index: int) -> tuple[Any, int, str]:
    """``(encoded bytes, label, path)`` of record ``index``."""
    path = os.path.join(self.root, self.paths[index].decode("utf-8"))
    with open(path, "rb") as f:
      return f.read(), int(self.labels[index]), path


class ArrayRecordSource:
  """``data_dir/<split>*.array_record`` files of :func:`encode_record` records, read through
  Grain's ``ArrayRecordDataSource``."""

  def __init__(self, data_dir: str, split: str):
    try:
      import array_record  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise DatasetNotFoundError(
          "data.source='arrayrecord' needs the array_record package (pip install array-record, "
          "or pip install 'nmsparse[stream]').") from e
    import grain  # pylint: disable=g-import-not-at-top
    pattern = os.path.join(os.path.expanduser(data_dir), f"{split}*.array_record")
    self.files = sorted(glob.glob(pattern))
    if not self.files:
      raise DatasetNotFoundError(f"No ArrayRecord files match {pattern}; write them with "
                                 "nmsparse.data.stream.encode_record records.")
    self.pattern = pattern
    self.source = grain.sources.ArrayRecordDataSource(self.files)
    self.fingerprint = zlib.crc32(
        "\n".join(f"{os.path.basename(f)}:{os.path.getsize(f)}" for f in self.files).encode())

  def __len__(self) -> int:
    return len(self.source)

  def read(self, index: int) -> tuple[Any, int, str]:
    record = self.source[index]
    return record[_LABEL.size:], _LABEL.unpack(record[:_LABEL.size])[0], \
        f"{self.pattern}[record {index}]"


class TfdsSource:
  """A prepared TFDS build in ArrayRecord format, through ``tfds.data_source`` (random access;
  never downloads)."""

  def __init__(self, name: str, data_dir: str | None, split: str):
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise DatasetNotFoundError(
          f"data.source='tfds' needs tensorflow-datasets (pip install 'nmsparse[tfds]') and the "
          f"prepared dataset {name!r} in data_dir={data_dir!r}.") from e
    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for missing or non-ArrayRecord builds
      raise DatasetNotFoundError(
          f"TFDS dataset {name!r} split {split!r} is not prepared in ArrayRecord format in "
          f"data_dir={data_dir!r}: {e}. Build it with `tfds build {name} --data_dir DIR "
          "--file_format=array_record`.") from e
    self.name = f"tfds:{name}/{split}"
    self.fingerprint = zlib.crc32(f"{self.name}:{len(self.source)}".encode())

  def __len__(self) -> int:
    return len(self.source)

  def read(self, index: int) -> tuple[Any, int, str]:
    record = self.source[index]
    return np.asarray(record["image"]), int(record["label"]), f"{self.name}[{index}]"


def open_source(cfg: Any, split: str) -> FolderSource | ArrayRecordSource | TfdsSource:
  """The streamed source of ``config.data`` (``data.source`` = folder | arrayrecord | tfds)."""
  if cfg.source == "folder":
    return FolderSource(cfg.data_dir, split)
  if cfg.source == "arrayrecord":
    return ArrayRecordSource(cfg.data_dir, split)
  if cfg.source == "tfds":
    return TfdsSource(cfg.name, cfg.data_dir or None, split)
  raise ValueError(f"data.pipeline='stream' reads data.source in {list(STREAM_SOURCES)}, got "
                   f"data.source={cfg.source!r}; use data.pipeline='device' for it.")


def decode(payload: Any, name: str) -> Any:
  """An RGB PIL image from encoded bytes or a decoded array.

  Raises:
    CorruptImageError: naming ``name`` when the bytes do not decode.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    if isinstance(payload, np.ndarray):
      return Image.fromarray(payload.squeeze(-1) if payload.shape[-1] == 1 else payload) \
          .convert("RGB")
    with Image.open(io.BytesIO(payload)) as im:
      return im.convert("RGB")
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise CorruptImageError(f"{name}: not a decodable image ({type(e).__name__}: {e}).") from e


def random_resized_crop(im: Any, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Any:
  """Inception-style crop: a random box of ``scale`` of the area and aspect ``ratio`` (10 tries,
  else the centre square), resized to ``size`` x ``size`` (bilinear)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  w, h = im.size
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    area = w * h * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
      return im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
  side = min(w, h)
  x, y = (w - side) // 2, (h - side) // 2
  return im.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))


def center_crop(im: Any, size: int, crop_fraction: float) -> Any:
  """Eval crop: the centre square of ``crop_fraction`` of the shorter side (0.875: resize to 256,
  crop 224), resized to ``size`` x ``size``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  w, h = im.size
  side = max(1, round(min(w, h) * crop_fraction))
  x, y = (w - side) // 2, (h - side) // 2
  return im.resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))


@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """What a streamed split computes; everything here is pickled to the worker processes."""

  image_size: int
  flip: bool
  on_corrupt: str
  crop_fraction: float
  min_scale: float
  seed: int
  process_index: int
  process_count: int


class _ShardOrder:
  """Epoch ``epoch``'s records of one process: a permutation of all records fixed by
  ``(seed, epoch)`` (or file order for eval), of which process ``p`` takes every ``k``-th from
  ``p`` on, so the processes' shards are disjoint and together cover the epoch."""

  def __init__(self, num_records: int, settings: StreamSettings, epoch: int | None):
    self.num_records, self.settings, self.epoch = num_records, settings, epoch
    self._indices = None

  def __getstate__(self):
    return {**self.__dict__, "_indices": None}  # recomputed in each worker

  @property
  def indices(self) -> np.ndarray:
    if self._indices is None:
      s = self.settings
      order = np.arange(self.num_records) if self.epoch is None else \
          np.random.default_rng([s.seed, self.epoch]).permutation(self.num_records)
      self._indices = order[s.process_index::s.process_count]
    return self._indices


class _TrainExample:
  """Shard position -> ``(uint8 [S, S, 3] image, int32 label)``: decode, random-resized crop and
  flip drawn from ``(seed, epoch, record)``; a corrupt record is logged and replaced by the next
  one of the shard (``on_corrupt="skip"``) or stops the run (``"fail"``)."""

  def __init__(self, source: Any, order: _ShardOrder):
    self.source, self.order = source, order

  def __call__(self, position: int) -> tuple[np.ndarray, np.int32]:
    s, indices = self.order.settings, self.order.indices
    for attempt in range(MAX_SUBSTITUTES):
      index = int(indices[(position + attempt) % len(indices)])
      payload, label, name = self.source.read(index)
      try:
        im = decode(payload, name)
      except CorruptImageError as e:
        _corrupt(e, s.on_corrupt)
        continue
      rng = np.random.default_rng([s.seed, self.order.epoch, index])
      im = random_resized_crop(im, s.image_size, rng, (s.min_scale, 1.0))
      out = np.asarray(im, np.uint8)
      if s.flip and rng.random() < 0.5:
        out = out[:, ::-1]
      return np.ascontiguousarray(out), np.int32(label)
    raise CorruptImageError(f"{MAX_SUBSTITUTES} records in a row from shard position {position} "
                            "are corrupt; check the dataset.")


class _EvalExample:
  """Padded shard position -> ``(image, label, valid)``: decode + centre crop; padding and
  skipped corrupt records are ``valid=False``."""

  def __init__(self, source: Any, order: _ShardOrder):
    self.source, self.order = source, order

  def __call__(self, position: int) -> tuple[np.ndarray, np.int32, np.bool_]:
    s, indices = self.order.settings, self.order.indices
    blank = np.zeros((s.image_size, s.image_size, 3), np.uint8)
    if position >= len(indices):
      return blank, np.int32(0), np.bool_(False)
    payload, label, name = self.source.read(int(indices[position]))
    try:
      im = decode(payload, name)
    except CorruptImageError as e:
      _corrupt(e, s.on_corrupt)
      return blank, np.int32(label), np.bool_(False)
    out = np.asarray(center_crop(im, s.image_size, s.crop_fraction), np.uint8)
    return out, np.int32(label), np.bool_(True)


def _corrupt(error: CorruptImageError, on_corrupt: str) -> None:
  if on_corrupt == "fail":
    raise CorruptImageError(f"{error} data.on_corrupt='fail' stops the run; remove or replace "
                            "the file, or set data.on_corrupt='skip'.") from error
  logging.warning("Skipping corrupt image (data.on_corrupt='skip'): %s", error)


def _iterate(dataset: Any, num_workers: int) -> Iterator[Any]:
  """Iterates a Grain ``MapDataset`` (in ``num_workers`` processes when > 0); closes its worker
  processes when the iteration ends or is abandoned."""
  import grain  # pylint: disable=g-import-not-at-top
  iter_ds = dataset.to_iter_dataset()
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; a library caller has none
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  it = iter(iter_ds)
  try:
    yield from it
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()


class StreamPipeline:
  """One process's view of a streamed dataset: per-epoch training batches from any step on, eval
  batches, and the iterator state a checkpoint records."""

  def __init__(self, train: Any, test: Any, settings: StreamSettings, batch_size: int,
               eval_batch_size: int, num_workers: int = 0):
    k = settings.process_count
    if not 0 <= settings.process_index < k:
      raise ValueError(f"process_index={settings.process_index} outside [0, {k}).")
    if settings.on_corrupt not in ON_CORRUPT:
      raise ValueError(f"data.on_corrupt={settings.on_corrupt!r}; use one of {list(ON_CORRUPT)}.")
    for field, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
      if value % k:
        raise ValueError(f"{field}={value} must divide by the {k} processes.")
    self.train, self.test, self.settings = train, test, settings
    self.batch_size, self.eval_batch_size = batch_size // k, eval_batch_size // k
    self.num_workers = num_workers
    self.steps_per_epoch = (len(train) // k) // self.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"batch_size={batch_size} exceeds the {len(train) // k} training records "
                       f"of each of the {k} processes.")
    self.eval_steps = -(-len(test) // eval_batch_size)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.settings.image_size, self.settings.image_size, 3)

  def epoch_dataset(self, epoch: int) -> Any:
    """Epoch ``epoch``'s batches as a random-access Grain ``MapDataset`` (batch ``i`` =
    ``dataset[i]``, a function of seed, epoch, process and ``i`` alone)."""
    import grain  # pylint: disable=g-import-not-at-top
    order = _ShardOrder(len(self.train), self.settings, epoch)
    n = self.steps_per_epoch * self.batch_size
    return grain.MapDataset.range(n).map(_TrainExample(self.train, order)).batch(
        self.batch_size, drop_remainder=True)

  def records(self, epoch: int) -> np.ndarray:
    """The record indices this process's batches of ``epoch`` hold, in order (before corrupt
    records are replaced)."""
    indices = _ShardOrder(len(self.train), self.settings, epoch).indices
    return indices[:self.steps_per_epoch * self.batch_size]

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Host batches ``(uint8 [b, S, S, 3], int32 [b])`` of ``epoch`` from batch ``start`` on."""
    if not 0 <= start <= self.steps_per_epoch:
      raise ValueError(f"start={start} outside the epoch's {self.steps_per_epoch} batches.")
    return _iterate(self.epoch_dataset(epoch)[start:], self.num_workers)

  def eval_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This process's eval batches ``(images, labels, valid)``, padded to ``eval_steps``."""
    import grain  # pylint: disable=g-import-not-at-top
    order = _ShardOrder(len(self.test), self.settings, None)
    n = self.eval_steps * self.eval_batch_size
    ds = grain.MapDataset.range(n).map(_EvalExample(self.test, order)).batch(
        self.eval_batch_size)
    return _iterate(ds, self.num_workers)

  def state(self, step: int) -> dict[str, int]:
    """The iterator state after ``step`` training steps (what a checkpoint records)."""
    return {"epoch": step // self.steps_per_epoch, "batch": step % self.steps_per_epoch,
            "records": len(self.train), "fingerprint": self.train.fingerprint & 0x7FFFFFFF,
            "process_count": self.settings.process_count}

  def check_state(self, recorded: dict[str, int], step: int) -> None:
    """Checks that a checkpoint's iterator state is where this pipeline resumes after ``step``.

    Raises:
      ValueError: naming what differs (the dataset's records, the process count, the position),
        since the resumed run would not see the batches the interrupted one would have.
    """
    expected = self.state(step)
    changed = [f"{k}: {int(recorded[k])} in the checkpoint, {v} now"
               for k, v in expected.items() if int(recorded[k]) != v]
    if changed:
      raise ValueError(
          f"The checkpoint's input-iterator state does not match this run ({'; '.join(changed)}): "
          "a resume would not continue with the batches of the interrupted run. Resume with the "
          "same dataset files and process count, or start a fresh --workdir.")


def make_pipeline(cfg: Any, *, seed: int, batch_size: int, eval_batch_size: int,
                  process_index: int = 0, process_count: int = 1) -> StreamPipeline:
  """The :class:`StreamPipeline` of a run's ``config.data`` for one process."""
  settings = StreamSettings(
      image_size=cfg.image_size, flip=cfg.flip, on_corrupt=cfg.get("on_corrupt", "fail"),
      crop_fraction=cfg.get("crop_fraction", 0.875), min_scale=cfg.get("min_scale", 0.08),
      seed=seed, process_index=process_index, process_count=process_count)
  return StreamPipeline(open_source(cfg, "train"), open_source(cfg, cfg.test_split), settings,
                        batch_size, eval_batch_size, cfg.get("num_workers", 0))


def folder_bytes(root: str, image_size: int, channels: int,
                 splits: Sequence[str] = ("train",)) -> int:
  """uint8 bytes an image folder would take in memory at ``image_size`` (files counted, not read)."""
  suffixes = tuple(s.lower() for s in IMAGE_SUFFIXES)
  count = 0
  for split in splits:
    for _, _, files in os.walk(os.path.join(os.path.expanduser(root), split)):
      count += sum(f.lower().endswith(suffixes) for f in files)
  return count * image_size * image_size * channels
