"""Streaming-input throughput on generated JPEGs: the pipeline's images/s alone, then per config the
train step's images/s on a fixed device batch and streamed, with the share of time spent waiting.

  python scripts/stream_throughput.py --data_dir /tmp/stream_jpegs --out results/stream_throughput.json
(``scripts/gpu_stream.sh`` runs this on the GPU machine; tests run it tiny on the CPU.)
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.data.stream import make_pipeline
from nmsparse.train.loop import Run
from nmsparse.train.metrics import device_name, git_sha, write_json

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "/tmp/stream_jpegs", "JPEG folder (train/<class>/, val/<class>/); "
                    "generated there when it has no train/ folder.")
flags.DEFINE_integer("num_images", 20000, "Training JPEGs to generate.")
flags.DEFINE_integer("classes", 100, "Class folders to generate.")
flags.DEFINE_string("jpeg_size", "500x375", "WxH of the generated JPEGs (ImageNet's typical size).")
flags.DEFINE_integer("image_size", 224, "Crop size the pipeline produces.")
flags.DEFINE_integer("workers", 14, "Grain decode processes.")
flags.DEFINE_integer("batch", 256, "Global batch of the pipeline and the steps.")
flags.DEFINE_integer("pipeline_batches", 40, "Timed batches of the pipeline alone (after one).")
flags.DEFINE_multi_string("configs", ["configs/resnet50_imagenet224.py",
                                      "configs/vit_b16_imagenet224.py"], "Configs to step.")
flags.DEFINE_multi_string("set", [], "key=value override for every config (repeatable).")
flags.DEFINE_integer("steps", 30, "Timed train steps per measurement.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation included).")
flags.DEFINE_string("out", "results/stream_throughput.json", "The JSON written.")


def _write_jpegs(job: tuple[str, int, int, int, int]) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder, start, count, w, h = job
  rng = np.random.default_rng(start)
  for i in range(start, start + count):
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth, photo-like
    im = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    im.save(os.path.join(folder, f"img_{i:07d}.JPEG"), quality=90)


def make_jpegs(root: str, num_train: int, classes: int, size: tuple[int, int]) -> None:
  """``root/{train,val}/<class>/*.JPEG``: ``num_train`` training images (and a tenth as many for
  val) spread over ``classes`` folders, written by every core."""
  jobs = []
  for split, n in (("train", num_train), ("val", max(classes, num_train // 10))):
    per_class = max(1, n // classes)
    for c in range(classes):
      folder = os.path.join(root, split, f"class_{c:04d}")
      os.makedirs(folder, exist_ok=True)
      jobs.append((folder, c * per_class, per_class, *size))
  start = time.perf_counter()
  with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
    pool.map(_write_jpegs, jobs)
  logging.info("Wrote %d JPEG folders under %s in %.0f s", len(jobs), root,
               time.perf_counter() - start)


def run_config(path: str) -> object:
  """``path`` streaming the generated folder at the script's batch, crop size and workers."""
  overrides = {"data.pipeline": "stream", "data.source": "folder", "data.data_dir": FLAGS.data_dir,
               "data.num_classes": FLAGS.classes, "data.image_size": FLAGS.image_size,
               "data.num_workers": FLAGS.workers, "data.test_split": "val",
               "batch_size": FLAGS.batch, "eval_batch_size": FLAGS.batch, "epochs": 1,
               "progress_bar": False, "tensorboard": False, "track_mask_flips": False}
  for item in FLAGS.set:
    key, value = item.split("=", 1)
    overrides[key] = parse_value(value)
  return apply_overrides(load_config(path), overrides)


def pipeline_rate(config: object) -> float:
  """Images/s of the host pipeline alone (decode + crop + batch), after its first batch."""
  pipe = make_pipeline(config.data, seed=0, batch_size=FLAGS.batch, eval_batch_size=FLAGS.batch,
                       process_index=jax.process_index(), process_count=jax.process_count())
  batches = pipe.epoch(0)
  next(batches)
  count = min(FLAGS.pipeline_batches, pipe.steps_per_epoch - 1)
  start = time.perf_counter()
  for _ in range(count):
    next(batches)
  rate = count * pipe.batch_size / (time.perf_counter() - start)
  batches.close()
  return rate


def step_rates(config: object) -> dict[str, float]:
  """Train-step images/s on one fixed device batch (median of synchronised steps) and streamed
  (the runner's loop: prefetched batches, no per-step sync), with the streamed input-wait share."""
  run = Run(config, tempfile.mkdtemp(prefix="stream_throughput_"))
  needed = FLAGS.warmup + FLAGS.steps
  if run.steps_per_epoch < needed + 1:
    raise ValueError(f"{FLAGS.num_images} images make {run.steps_per_epoch} batches of "
                     f"{FLAGS.batch}; --warmup + --steps need {needed + 1}: raise --num_images.")
  batches = run.epoch_batches(0, 0)
  fixed = next(batches)  # on the devices already; the step donates only the state
  times = []
  for i in range(needed):
    start = time.perf_counter()
    run.state, metrics = run.train_step(run.state, *fixed)
    jax.block_until_ready(metrics)
    if i >= FLAGS.warmup:
      times.append(time.perf_counter() - start)
  for _ in range(FLAGS.warmup):
    run.state, metrics = run.train_step(run.state, *next(batches))
  jax.block_until_ready(metrics)
  wait_before, start = batches.wait_s, time.perf_counter()
  for _ in range(FLAGS.steps):
    run.state, metrics = run.train_step(run.state, *next(batches))
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - start
  batches.close()
  median = statistics.median(times)
  return {"step_ms_median_fixed_batch": 1e3 * median,
          "step_images_per_s_fixed_batch": FLAGS.batch / median,
          "streamed_images_per_s": FLAGS.steps * FLAGS.batch / elapsed,
          "input_wait_fraction": (batches.wait_s - wait_before) / elapsed}


def main(argv: list[str]) -> None:
  del argv
  if not os.path.isdir(os.path.join(FLAGS.data_dir, "train")):
    w, h = (int(v) for v in FLAGS.jpeg_size.split("x"))
    make_jpegs(FLAGS.data_dir, FLAGS.num_images, FLAGS.classes, (w, h))
  configs = [(path, run_config(path)) for path in FLAGS.configs]
  result = {"device": device_name(), "git_sha": git_sha(), "jax_version": jax.__version__,
            "host_cpus": os.cpu_count(), "num_workers": FLAGS.workers,
            "image_size": FLAGS.image_size, "jpeg_size": FLAGS.jpeg_size, "batch": FLAGS.batch,
            "pipeline_images_per_s": pipeline_rate(configs[0][1]), "runs": []}
  logging.info("input pipeline: %.0f images/s with %d workers", result["pipeline_images_per_s"],
               FLAGS.workers)
  for path, config in configs:
    row = {"config": path, "model": config.model, "method": config.method,
           "pattern": None if config.method == "dense" else config.pattern,
           "dtype": config.dtype, **step_rates(config)}
    logging.info("%s: %s", path, row)
    result["runs"].append(row)
  write_json(FLAGS.out, result)
  logging.info("Wrote %s", FLAGS.out)


if __name__ == "__main__":
  app.run(main)
