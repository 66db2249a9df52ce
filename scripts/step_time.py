"""Train-step time of a config with and without the input pipeline, on 1..N local devices.

"with data" is the runner's step: on-device gather from the replicated uint8 training set, random
crop/flip, normalise, forward/backward, update. "without data" is the same update on one fixed,
already prepared batch. Per-step times are device-synchronised; the median over ``--steps`` steps
after ``--warmup`` is reported (SPEC §3). Per-device batch stays ``config.batch_size`` (weak
scaling) unless ``--fixed_global_batch``.

  python scripts/step_time.py --config configs/resnet18_cifar10.py --num_devices 1,2,4 \
      --set data.data_dir=./data --out results/step_time_resnet18.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.config_io import apply_overrides, load_config, parse_value  # noqa: E402
from nmsparse.data.augment import augment  # noqa: E402
from nmsparse.ops.registry import resolve_implementation  # noqa: E402
from nmsparse.train.loop import Run, epoch_order  # noqa: E402
from nmsparse.train.metrics import device_name, write_json  # noqa: E402
from nmsparse.train.parallel import put_batch_sharded  # noqa: E402
from nmsparse.train.step import make_batch_train_step  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg].")
flags.DEFINE_multi_string("set", [], "key=value config override (repeatable).")
flags.DEFINE_string("num_devices", "1", "Comma-separated device counts to measure.")
flags.DEFINE_integer("steps", 50, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation included).")
flags.DEFINE_bool("fixed_global_batch", False, "Keep config.batch_size as the global batch.")
flags.DEFINE_string("out", "", "Write the measurements as JSON here.")
flags.mark_flag_as_required("config")


def median_step_ms(step, state, args_for, warmup: int, steps: int):
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = step(state, *args_for(i))
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return state, 1e3 * float(np.median(times))


def measure(config, num_devices: int) -> dict:
  """One device count: median step ms with and without data loading."""
  with config.unlocked():
    config.num_devices = num_devices
    if not FLAGS.fixed_global_batch:
      config.batch_size *= num_devices
  run = Run(config, tempfile.mkdtemp(prefix="step_time_"))
  n = len(run.data.train_labels)
  order = put_batch_sharded(epoch_order(run.data_key, 0, n, config.batch_size), run.mesh, axis=1)
  steps = order.shape[0]
  run.state, with_data = median_step_ms(
      run.train_step, run.state,
      lambda i: (*run.train_arrays, order, jnp.int32(i % steps), run.step_key),
      FLAGS.warmup, FLAGS.steps)
  idx = np.asarray(order[0])
  x = augment(run.step_key, jnp.asarray(run.data.train_images[idx]), jnp.asarray(run.inputs.mean),
              jnp.asarray(run.inputs.std), pad=run.inputs.pad, flip=run.inputs.flip,
              dtype=run.inputs.dtype)
  x = put_batch_sharded(np.asarray(x), run.mesh)
  y = put_batch_sharded(run.data.train_labels[idx], run.mesh)
  batch_step = make_batch_train_step(run.model, run.mesh, config.data.num_classes,
                                     config.label_smoothing)
  run.state, without_data = median_step_ms(batch_step, run.state, lambda i: (x, y),
                                           FLAGS.warmup, FLAGS.steps)
  return {"config": config.name, "model": config.model, "method": config.method,
          "pattern": None if config.method == "dense" else config.pattern,
          "implementation": resolve_implementation(config.implementation), "dtype": config.dtype,
          "num_devices": num_devices, "global_batch": config.batch_size,
          "device": device_name(), "data_source": config.data.source,
          "step_ms_with_data": with_data, "step_ms_without_data": without_data,
          "images_per_s_with_data": config.batch_size / with_data * 1e3,
          "images_per_s_without_data": config.batch_size / without_data * 1e3,
          "steps": FLAGS.steps}


def main(argv):
  del argv
  sets = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in FLAGS.set)}
  rows = []
  for k in (int(s) for s in FLAGS.num_devices.split(",")):
    config = apply_overrides(load_config(FLAGS.config), {**sets, "progress_bar": False})
    rows.append(measure(config, k))
    logging.info("%s", rows[-1])
  base = rows[0]["images_per_s_with_data"] / rows[0]["num_devices"]
  print(f"{'devices':>7} {'batch':>6} {'ms/step data':>13} {'ms/step no data':>16} "
        f"{'img/s':>9} {'scaling':>8}   ({rows[0]['device']}, {rows[0]['config']} "
        f"{rows[0]['method']} {rows[0]['pattern']})")
  for r in rows:
    r["scaling_vs_first"] = r["images_per_s_with_data"] / (base * rows[0]["num_devices"])
    print(f"{r['num_devices']:>7} {r['global_batch']:>6} {r['step_ms_with_data']:>13.2f} "
          f"{r['step_ms_without_data']:>16.2f} {r['images_per_s_with_data']:>9.0f} "
          f"{r['scaling_vs_first']:>7.2f}x")
  if FLAGS.out:
    write_json(FLAGS.out, rows)


if __name__ == "__main__":
  app.run(main)
