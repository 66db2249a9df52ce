"""Step timing as SPEC §3 measures it: jit-compiled, warmed up, device-synchronised, median."""

from __future__ import annotations

import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nmsparse.data.augment import augment
from nmsparse.ops.registry import resolve_implementation
from nmsparse.train.loop import Run, epoch_order
from nmsparse.train.metrics import device_name, git_sha
from nmsparse.train.parallel import put_batch_sharded
from nmsparse.train.step import make_batch_train_step


def median_step_ms(step: Callable[..., tuple[Any, Any]], state: Any,
                   args_for: Callable[[int], tuple], warmup: int, steps: int) -> tuple[Any, float]:
  """Runs ``state, metrics = step(state, *args_for(i))`` ``warmup + steps`` times.

  Each step is synchronised (``block_until_ready`` on its metrics) before the clock is read.

  Returns:
    The final state and the median milliseconds of the last ``steps`` steps.
  """
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = step(state, *args_for(i))
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return state, 1e3 * float(np.median(times))


def measure_step_time(config: Any, warmup: int, steps: int,
                      with_data: bool = True) -> dict[str, Any]:
  """Median train-step ms of ``config`` (its devices, its global batch) with and without data.

  "with data" is the runner's step: on-device gather from the resident uint8 training set, random
  crop/flip, normalise, forward/backward, update. "without data" is the same update on one fixed,
  already prepared batch. ``with_data=False`` skips the first (one compilation less); its entries
  are then ``None``.
  """
  run = Run(config, tempfile.mkdtemp(prefix="step_time_"))
  n = len(run.data.train_labels)
  order = put_batch_sharded(epoch_order(run.data_key, 0, n, config.batch_size), run.mesh, axis=1)
  num_batches = order.shape[0]
  with_data_ms = None
  if with_data:
    run.state, with_data_ms = median_step_ms(
        run.train_step, run.state,
        lambda i: (*run.train_arrays, order, jnp.int32(i % num_batches), run.step_key),
        warmup, steps)
  idx = np.asarray(order[0])
  x = augment(run.step_key, jnp.asarray(run.data.train_images[idx]), jnp.asarray(run.inputs.mean),
              jnp.asarray(run.inputs.std), pad=run.inputs.pad, flip=run.inputs.flip,
              dtype=run.inputs.dtype)
  x = put_batch_sharded(np.asarray(x), run.mesh)
  y = put_batch_sharded(run.data.train_labels[idx], run.mesh)
  batch_step = make_batch_train_step(run.model, run.mesh, config.data.num_classes,
                                     config.label_smoothing)
  run.state, without_data = median_step_ms(batch_step, run.state, lambda i: (x, y), warmup, steps)
  return {"config": config.name, "model": config.model, "method": config.method,
          "pattern": None if config.method == "dense" else config.pattern,
          "implementation": resolve_implementation(config.implementation), "dtype": config.dtype,
          "num_devices": run.mesh.size, "global_batch": config.batch_size,
          "device": device_name(), "data_source": config.data.source,
          "step_ms_with_data": with_data_ms, "step_ms_without_data": without_data,
          "images_per_s_with_data": (config.batch_size / with_data_ms * 1e3
                                     if with_data_ms is not None else None),
          "images_per_s_without_data": config.batch_size / without_data * 1e3,
          "steps": steps, "jax_version": jax.__version__, "git_sha": git_sha()}
