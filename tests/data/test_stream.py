"""The streaming pipeline on a generated JPEG folder: deterministic order, disjoint per-process
shards, exact mid-epoch resume through the runner, corrupt files, sources, and the device path's
size check."""

import hashlib
import logging
import os

import ml_collections
import numpy as np
import pytest

from experiments.config_io import apply_overrides, load_config
from nmsparse.data import stream
from nmsparse.train import train_and_evaluate
from nmsparse.train.inputs import DatasetTooLargeError, DevicePrefetch
from nmsparse.train.workdir import changed_fields

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ("ant", "bee", "cat", "dog")
TRAIN_PER_CLASS, VAL_PER_CLASS = 50, 6


def write_jpegs(root, per_class, split):
  from PIL import Image
  rng = np.random.default_rng(len(split))
  for label, cls in enumerate(CLASSES):
    os.makedirs(root / split / cls)
    for i in range(per_class):
      h, w = rng.integers(28, 56, 2)
      pixels = rng.integers(0, 64, (h, w, 3)) + 48 * label
      Image.fromarray(pixels.astype(np.uint8)).save(root / split / cls / f"{cls}_{i:03d}.JPEG")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("jpegs")
  write_jpegs(root, TRAIN_PER_CLASS, "train")
  write_jpegs(root, VAL_PER_CLASS, "val")
  return root


def data_config(root, **overrides):
  return ml_collections.ConfigDict({**dict(
      source="folder", name="jpegs", data_dir=str(root), num_classes=len(CLASSES), image_size=16,
      channels=3, flip=True, test_split="val", on_corrupt="fail", num_workers=0), **overrides})


def pipeline(root, process_index=0, process_count=1, seed=0, batch=20, **overrides):
  return stream.make_pipeline(data_config(root, **overrides), seed=seed, batch_size=batch,
                              eval_batch_size=batch, process_index=process_index,
                              process_count=process_count)


def digest(batch):
  return hashlib.sha1(b"".join(np.ascontiguousarray(np.asarray(x)).tobytes()
                               for x in batch)).hexdigest()


def hashes(batches):
  return [digest(b) for b in batches]


def test_batches_are_augmented_uint8_crops_with_their_labels(folder):
  p = pipeline(folder)
  assert p.steps_per_epoch == len(CLASSES) * TRAIN_PER_CLASS // 20
  images, labels = next(p.epoch(0))
  assert images.shape == (20, 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, p.train.labels[p.records(0)[:20]])
  # Class c's pixels lie in [48c, 48c + 64): a crop keeps its class's range.
  for image, label in zip(images, labels):
    assert 48 * label - 1 <= image.mean() <= 48 * label + 65


def test_order_is_fixed_by_seed_epoch_and_process(folder):
  first = hashes(pipeline(folder).epoch(0))
  assert hashes(pipeline(folder).epoch(0)) == first
  assert hashes(pipeline(folder).epoch(1)) != first
  assert hashes(pipeline(folder, seed=1).epoch(0)) != first
  assert hashes(pipeline(folder, 1, 2, batch=20).epoch(0)) != \
      hashes(pipeline(folder, 0, 2, batch=20).epoch(0))


def test_worker_processes_produce_the_same_batches(folder):
  in_process = hashes(pipeline(folder).epoch(2))
  assert hashes(pipeline(folder, num_workers=2).epoch(2)) == in_process


def test_two_processes_read_disjoint_shards_whose_union_is_the_epoch(folder):
  shards = [pipeline(folder, p, 2, batch=20) for p in (0, 1)]
  for epoch in (0, 1):
    records = [s.records(epoch) for s in shards]
    assert not set(records[0]) & set(records[1])
    assert sorted(np.concatenate(records)) == list(range(len(CLASSES) * TRAIN_PER_CLASS))
    for s, r in zip(shards, records):
      labels = np.concatenate([y for _, y in s.epoch(epoch)])
      np.testing.assert_array_equal(labels, s.train.labels[r])
  assert shards[0].steps_per_epoch == shards[1].steps_per_epoch == 10


def test_eval_shards_cover_the_validation_split_once(folder):
  shards = [pipeline(folder, p, 2, batch=8) for p in (0, 1)]
  counted = [(y[v].tolist(), int(v.sum())) for s in shards for _, y, v in s.eval_batches()]
  labels = sorted(label for ys, _ in counted for label in ys)
  assert labels == sorted(shards[0].test.labels.tolist())
  assert sum(n for _, n in counted) == len(CLASSES) * VAL_PER_CLASS


def test_resume_from_any_batch_continues_the_epoch(folder):
  p = pipeline(folder)
  whole = hashes(p.epoch(1))
  assert hashes(p.epoch(1, start=4)) == whole[4:]
  state = p.state(p.steps_per_epoch + 4)
  assert (state["epoch"], state["batch"]) == (1, 4)


def test_a_changed_dataset_refuses_the_checkpoints_iterator_state(folder):
  p = pipeline(folder)
  recorded = {**p.state(5), "fingerprint": p.state(5)["fingerprint"] ^ 1}
  with pytest.raises(ValueError, match="fingerprint"):
    p.check_state(recorded, 5)
  p.check_state(p.state(5), 5)


def corrupt_copy(folder, tmp_path):
  import shutil
  root = tmp_path / "with_corrupt"
  shutil.copytree(folder, root)
  bad = root / "train" / "bee" / "bee_007.JPEG"
  bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
  return root, str(bad)


def test_a_corrupt_jpeg_fails_with_its_path(folder, tmp_path):
  root, bad = corrupt_copy(folder, tmp_path)
  with pytest.raises(stream.CorruptImageError, match="bee_007.JPEG.*on_corrupt='skip'"):
    list(pipeline(root, on_corrupt="fail").epoch(0))


def test_a_corrupt_jpeg_is_skipped_and_logged_with_its_path(folder, tmp_path, caplog):
  root, bad = corrupt_copy(folder, tmp_path)
  p = pipeline(root, on_corrupt="skip")
  with caplog.at_level(logging.WARNING):
    batches = list(p.epoch(0))
  assert len(batches) == p.steps_per_epoch and all(len(y) == 20 for _, y in batches)
  assert any(bad in r.getMessage() for r in caplog.records)
  # The batch holding it carries the next record of the shard in its place.
  position = int(np.flatnonzero(p.train.paths[p.records(0)] == b"bee/bee_007.JPEG")[0])
  labels = np.concatenate([y for _, y in batches])
  assert labels[position] == p.train.labels[p.records(0)[(position + 1) % len(p.records(0))]]


def test_arrayrecord_source_reads_the_records(folder, tmp_path):
  from array_record.python.array_record_module import ArrayRecordWriter
  src = stream.FolderSource(str(folder), "train")
  for split in ("train", "val"):
    writer = ArrayRecordWriter(str(tmp_path / f"{split}-00000-of-00001.array_record"),
                               "group_size:1")
    for i in range(40):
      payload, label, _ = src.read(i * 5)
      writer.write(stream.encode_record(label, payload))
    writer.close()
  p = pipeline(tmp_path, source="arrayrecord", batch=8)
  assert len(p.train) == 40 and p.steps_per_epoch == 5
  images, labels = next(p.epoch(0))
  assert images.shape == (8, 16, 16, 3)
  np.testing.assert_array_equal(labels, src.labels[p.records(0)[:8] * 5])


def test_tfds_source_without_tfds_names_the_package(tmp_path):
  pytest.importorskip("grain")
  try:
    import tensorflow_datasets  # pylint: disable=unused-import
    pytest.skip("tensorflow-datasets is installed; this checks the error without it")
  except ImportError:
    pass
  with pytest.raises(stream.DatasetNotFoundError, match="tensorflow-datasets"):
    stream.open_source(data_config(tmp_path, source="tfds"), "train")


def test_device_prefetch_keeps_batches_in_flight_and_reraises():
  made = []

  def batches():
    for i in range(10):
      made.append(i)
      yield (np.full((2,), i),)
    raise RuntimeError("decode failed in batch 10")

  prefetch = DevicePrefetch(batches(), lambda b: b, size=2)
  assert next(prefetch)[0][0] == 0
  import time
  time.sleep(0.3)
  assert len(made) <= 4  # two queued, one being placed, one consumed: never the whole epoch
  assert [next(prefetch)[0][0] for _ in range(9)] == list(range(1, 10))
  with pytest.raises(RuntimeError, match="batch 10"):
    next(prefetch)
  prefetch.close()


def stream_run_config(name, root, **overrides):
  config = load_config(os.path.join(ROOT, "configs", f"{name}.py:smoke"))
  return apply_overrides(config, {
      "data.pipeline": "stream", "data.source": "folder", "data.data_dir": str(root),
      "data.name": "jpegs", "data.num_classes": len(CLASSES), "data.image_size": 32,
      "data.test_split": "val", "data.channels": 3, "data.num_workers": 0, "batch_size": 100,
      "eval_batch_size": 24, **overrides})


def test_two_training_steps_through_the_stream_with_the_imagenet_config(folder, tmp_path):
  config = stream_run_config("vit_b16_imagenet224", folder, **{"data.image_size": 32})
  results = train_and_evaluate(config, str(tmp_path / "run"))
  assert results["steps"] == 2 and results["dataset"] == "jpegs"
  record = results["history"][0]
  assert np.isfinite(record["train_loss"]) and 0.0 <= results["test_accuracy"] <= 1.0
  assert record["input_images_per_s"] > 0 and 0.0 <= record["input_wait_fraction"] <= 1.0


def test_resume_mid_epoch_sees_the_batches_of_an_uninterrupted_run(folder, tmp_path,
                                                                   monkeypatch):
  seen = []
  original = DevicePrefetch.__next__

  def recording(self):
    batch = original(self)
    if len(batch) == 2:  # a training batch (eval batches carry a validity mask too)
      seen.append(digest(batch))
    return batch

  monkeypatch.setattr(DevicePrefetch, "__next__", recording)
  config = stream_run_config("quickstart", folder, **{
      "data.image_size": 16, "batch_size": 40, "epochs": 2, "checkpoint_every_steps": 2,
      "keep_checkpoints": 3, "eval_every_epochs": 2})
  full = train_and_evaluate(config, str(tmp_path / "full"))
  uninterrupted, seen[:] = list(seen), []
  assert len(uninterrupted) == 10 and full["steps"] == 10
  assert train_and_evaluate(config, str(tmp_path / "resumed"), stop_after_step=3) is None
  first, seen[:] = list(seen), []
  resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
  assert first == uninterrupted[:3]
  assert seen == uninterrupted[2:]  # the checkpoint of step 2, then steps 3.. again
  assert resumed["test_accuracy"] == full["test_accuracy"]
  assert resumed["history"][-1]["train_loss"] == full["history"][-1]["train_loss"]


def test_the_device_path_refuses_a_dataset_too_large_for_device_memory(folder, tmp_path):
  config = stream_run_config("quickstart", folder, **{
      "data.pipeline": "device", "data.image_size": 16, "data.device_memory_limit_mb": 0.1})
  with pytest.raises(DatasetTooLargeError, match=r"data\.pipeline=stream"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_streaming_configs_and_older_workdirs():
  for name in ("resnet50_imagenet224", "vit_b16_imagenet224"):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    full, speed, smoke = (load_config(path + arg) for arg in ("", ":speed", ":smoke"))
    assert (full.data.pipeline, full.data.source, full.data.prefetch) == ("stream", "folder", 2)
    assert full.label_smoothing == 0.1
    assert speed.data.pipeline == smoke.data.pipeline == "device"
    assert smoke.data.source == speed.data.source == "synthetic"
  recorded = load_config(os.path.join(ROOT, "configs", "quickstart.py")).to_dict()
  for field in ("pipeline", "on_corrupt", "num_workers", "prefetch", "crop_fraction", "min_scale",
                "device_memory_limit_mb"):
    del recorded["data"][field]  # a workdir recorded before these fields existed
  assert changed_fields(recorded, load_config(os.path.join(ROOT, "configs", "quickstart.py"))) == []


def test_bad_stream_fields_are_named(folder, tmp_path):
  for overrides, field in (({"data.pipeline": "disk"}, "data.pipeline"),
                           ({"data.on_corrupt": "ignore"}, "data.on_corrupt"),
                           ({"data.source": "synthetic"}, "data.source")):
    config = stream_run_config("quickstart", folder, **overrides)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
      train_and_evaluate(config, str(tmp_path / field))
