"""Step timing as SPEC §3 measures it: jit-compiled, warmed up, device-synchronised, median."""

from __future__ import annotations

import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from nmsparse.data.augment import augment
from nmsparse.train.loop import Run, epoch_order
from nmsparse.train.metrics import device_name, git_sha
from nmsparse.train.parallel import AXIS, put_batch_sharded, shard_map
from nmsparse.train.step import make_batch_train_step, make_train_step


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


def pipelined_step_ms(step: Callable[..., tuple[Any, Any]], state: Any,
                      args_for: Callable[[int], tuple], steps: int,
                      chunk: int = 10) -> tuple[Any, float, float]:
  """Throughput view: ``chunk`` steps enqueued back to back (as a training loop runs them), one
  device sync per chunk. Returns the state and the median per-step ms over the chunks covering at
  least ``steps`` steps (run after :func:`median_step_ms`'s warm-up, so nothing compiles here).
  Also returns the median host time of one ``step(...)`` call (dispatch: the host returns before
  the device is done): when it nears the step time, the host's launching sets the pace."""
  times, host = [], []
  i = 0
  while i < steps:
    start = time.perf_counter()
    for _ in range(chunk):
      t0 = time.perf_counter()
      state, metrics = step(state, *args_for(i))
      host.append(time.perf_counter() - t0)
      i += 1
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / chunk)
  return state, 1e3 * float(np.median(times)), 1e3 * float(np.median(host))


def allreduce_ms(tree: Any, mesh: Any, steps: int = 50) -> float:
  """Median ms of ``pmean`` over the ``data`` axis of a replicated pytree (the gradient
  all-reduce alone, as the train step issues it)."""
  f = jax.jit(shard_map(lambda t: lax.pmean(t, AXIS), mesh, in_specs=(P(),), out_specs=P()))

  def one(t):
    out = f(t)
    return out, out

  return median_step_ms(one, tree, lambda i: (), 3, steps)[1]


def fixed_batch(run: Run, idx: np.ndarray | None = None) -> tuple[jax.Array, jax.Array]:
  """One training batch as the train step prepares it (random crop/flip, normalised, compute
  dtype), batch-sharded over ``run.mesh``: the input of :func:`make_batch_train_step`'s step.

  Args:
    run: a run with its dataset in memory (``data.pipeline="device"``).
    idx: the examples; default the first batch of epoch 0.
  """
  if idx is None:
    idx = epoch_order(run.data_key, 0, len(run.data.train_labels), run.config.batch_size)[0]
  x = augment(run.step_key, jnp.asarray(run.data.train_images[idx]), jnp.asarray(run.inputs.mean),
              jnp.asarray(run.inputs.std), pad=run.inputs.pad, flip=run.inputs.flip,
              dtype=run.inputs.dtype)
  return (put_batch_sharded(np.asarray(x), run.mesh),
          put_batch_sharded(run.data.train_labels[idx], run.mesh))


def measure_step_time(config: Any, warmup: int, steps: int, with_data: bool = True,
                      without_data: bool = True, probes: bool = False) -> dict[str, Any]:
  """Median train-step ms of ``config`` (its devices, its global batch) with and without data.

  "with data" is the runner's step: on-device gather from the resident uint8 training set, random
  crop/flip, normalise, forward/backward, update. "without data" is the same update on one fixed,
  already prepared batch. ``with_data=False`` / ``without_data=False`` skip one (one compilation
  less); its entries are then ``None``.

  Both per-step views are reported for "with data": ``step_ms_with_data`` syncs the device after
  every step (SPEC §3), ``pipelined_step_ms_with_data`` syncs once per 10 steps as training does
  (host dispatch overlaps the device). ``probes=True`` adds, for diagnosing data-parallel scaling:
  the same step with the gradient all-reduce removed (``no_sync_step_ms``, pipelined) and the
  all-reduce of the parameters' pytree alone (``allreduce_ms``). A ``bimask`` run with
  ``bimask_search="marked_calls"`` is timed on its ordinary step: the search step, one in
  ``bimask_refresh``, is not timed.
  """
  if config.data.get("pipeline", "device") != "device":
    raise ValueError(f"data.pipeline={config.data.pipeline!r}: this times the in-memory device "
                     "pipeline; use the config's :speed variant, or scripts/stream_throughput.py "
                     "for the streaming pipeline.")
  run = Run(config, tempfile.mkdtemp(prefix="step_time_"))
  n = len(run.data.train_labels)
  order = put_batch_sharded(epoch_order(run.data_key, 0, n, config.batch_size), run.mesh, axis=1)
  num_batches = order.shape[0]
  with_data_ms = pipelined_ms = dispatch_ms = no_sync_ms = reduce_ms = None
  data_args = lambda i: (*run.train_arrays, order, jnp.int32(i % num_batches), run.step_key)
  if with_data:
    run.state, with_data_ms = median_step_ms(run.train_step, run.state, data_args, warmup, steps)
    run.state, pipelined_ms, dispatch_ms = pipelined_step_ms(run.train_step, run.state, data_args,
                                                             steps)
  if probes:
    no_sync = make_train_step(run.model, run.mesh, run.inputs, config.data.num_classes,
                              config.label_smoothing, grad_sync=False)
    run.state, _ = median_step_ms(no_sync, run.state, data_args, warmup, 0)
    run.state, no_sync_ms, _ = pipelined_step_ms(no_sync, run.state, data_args, steps)
    reduce_ms = allreduce_ms(run.state.params, run.mesh, steps)
  extra = {"pipelined_step_ms_with_data": pipelined_ms, "host_dispatch_ms": dispatch_ms,
           "pipelined_images_per_s_with_data": (config.batch_size / pipelined_ms * 1e3
                                                if pipelined_ms is not None else None)}
  if probes:
    extra.update(no_sync_step_ms=no_sync_ms, allreduce_ms=reduce_ms,
                 param_bytes=int(sum(a.nbytes for a in jax.tree.leaves(run.state.params))))
  if not without_data:
    return _row(config, run, with_data_ms, None, steps, extra)
  x, y = fixed_batch(run, np.asarray(order[0]))
  batch_step = make_batch_train_step(run.model, run.mesh, config.data.num_classes,
                                     config.label_smoothing)
  run.state, without_data = median_step_ms(batch_step, run.state, lambda i: (x, y), warmup, steps)
  return _row(config, run, with_data_ms, without_data, steps, extra)


def _row(config, run, with_data_ms, without_data, steps, extra) -> dict[str, Any]:
  return {"config": config.name, "model": config.model, "method": config.method,
          "pattern": None if config.method == "dense" else config.pattern,
          "implementation": config.implementation or "auto", "dtype": config.dtype,
          "mask_every": int(config.get("mask_every", 1)), "num_devices": run.mesh.size, "global_batch": config.batch_size,
          "device": device_name(), "data_source": config.data.source,
          "step_ms_with_data": with_data_ms, "step_ms_without_data": without_data,
          "images_per_s_with_data": (config.batch_size / with_data_ms * 1e3
                                     if with_data_ms is not None else None),
          "images_per_s_without_data": (config.batch_size / without_data * 1e3
                                        if without_data is not None else None),
          "steps": steps, "jax_version": jax.__version__, "git_sha": git_sha(), **extra}
