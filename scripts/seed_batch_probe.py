"""Would training K seeds in one process, the train step vmapped over K stacked states, finish
more runs per GPU-second than one seed per process? Times the runner's own step (on-device gather,
augmentation, forward/backward, update) for one state and vmapped over K copies of it, each copy
with its own epoch order and key, and prints the per-run step time of each K.

  python scripts/seed_batch_probe.py --config configs/resnet18_cifar10.py:full \
      --set data.source=synthetic --set data.data_dir= --k 1,2,3 --out probe.json

A probe, not a training path: the copies start from one initial state; copy 0 gets the orders and
key the first K's run got, so after the same steps its weights must match that run's (each later
row reports the largest difference, ``copy0_params_max_abs_diff``). Timing as SPEC §3 says:
warm-up, synchronised, median.
"""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.train.loop import Run, epoch_order
from nmsparse.train.metrics import device_name, git_sha, write_json
from nmsparse.train.parallel import put_batch_sharded
from nmsparse.train.timing import median_step_ms, pipelined_step_ms

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg].")
flags.DEFINE_multi_string("set", [], "key=value config override (repeatable).")
flags.DEFINE_string("k", "1,2,3", "Comma-separated numbers of stacked states to time.")
flags.DEFINE_integer("steps", 40, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 4, "Untimed steps first (compilation included).")
flags.DEFINE_string("out", "", "Write the measurements as JSON here.")
flags.mark_flag_as_required("config")


def stacked_step(run: Run, k: int):
  """``step(states, images, labels, orders, i, keys)``: the run's step vmapped over ``k`` states,
  orders and keys (the dataset shared); ``k == 1`` is the run's step itself."""
  if k == 1:
    return run.train_step
  return jax.jit(jax.vmap(run.train_step, in_axes=(0, None, None, 0, None, 0)),
                 donate_argnums=(0,))


def measure(run: Run, k: int) -> tuple[object, dict]:
  """The final (stacked) state after timing ``k`` copies, and the row of times."""
  n = len(run.data.train_labels)
  bs = run.config.batch_size
  orders = [put_batch_sharded(epoch_order(jax.random.fold_in(run.data_key, s), 0, n, bs),
                              run.mesh, axis=1) for s in range(k)]
  keys = [jax.random.fold_in(run.step_key, s) for s in range(k)]
  if k == 1:
    state, order, key = jax.tree.map(jnp.copy, run.state), orders[0], keys[0]  # step donates
  else:
    state = jax.tree.map(lambda a: jnp.stack([a] * k), run.state)
    order, key = jnp.stack(orders), jnp.stack(keys)
  num_batches = orders[0].shape[0]
  args = lambda i: (*run.train_arrays, order, jnp.int32(i % num_batches), key)
  step = stacked_step(run, k)
  state, synced_ms = median_step_ms(step, state, args, FLAGS.warmup, FLAGS.steps)
  state, pipelined_ms, host_ms = pipelined_step_ms(step, state, args, FLAGS.steps)
  return state, {"k": k, "synced_step_ms": synced_ms, "pipelined_step_ms": pipelined_ms,
                 "host_dispatch_ms": host_ms, "pipelined_ms_per_run_step": pipelined_ms / k,
                 "images_per_s": k * bs / pipelined_ms * 1e3}


def main(argv):
  del argv
  sets = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in FLAGS.set)}
  config = apply_overrides(load_config(FLAGS.config), {**sets, "progress_bar": False})
  run = Run(config, tempfile.mkdtemp(prefix="seed_probe_"))
  rows, first = [], None
  for k in (int(k) for k in FLAGS.k.split(",")):
    state, row = measure(run, k)
    params = state.params if k == 1 else jax.tree.map(lambda a: a[0], state.params)
    if first is None:
      first = params
    else:  # copy 0 saw the first row's orders and keys: it must have trained the same weights
      row["copy0_params_max_abs_diff"] = max(
          float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
          for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(first)))
    rows.append(row)
  base = rows[0]["pipelined_ms_per_run_step"]
  for r in rows:
    r["speedup_vs_first"] = base / r["pipelined_ms_per_run_step"]
  out = {"config": config.name, "method": config.method, "pattern": config.get("pattern"),
         "batch_size": config.batch_size, "device": device_name(), "jax_version": jax.__version__,
         "git_sha": git_sha(), "steps": FLAGS.steps, "rows": rows}
  if FLAGS.out:
    write_json(FLAGS.out, out)
  for r in rows:
    print(f"{config.name} {config.method} k={r['k']}: {r['pipelined_step_ms']:.2f} ms/step, "
          f"{r['pipelined_ms_per_run_step']:.2f} ms per run-step, x{r['speedup_vs_first']:.2f}")


if __name__ == "__main__":
  app.run(main)
