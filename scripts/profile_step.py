"""Where a train step's GPU time goes: kernel time per name and per op class, from a profiler trace.

  python scripts/profile_step.py --config configs/vit_b16_imagenet224.py:speed --set method=dense \
      --out OUT/profile_vitb.json [--steps 5]

Runs the runner's step (the one ``step_time.py`` times) ``--steps`` times under
``jax.profiler.trace`` after a warm-up, reads the Perfetto trace back and sums the device events by
kernel name; the JSON holds the top kernels, a coarse class table (GEMM, attention, convolution,
fusion, copy, other) and the busy time per step next to the wall time per step.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app, flags


import jax
import jax.numpy as jnp
import numpy as np

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.train.loop import Run, epoch_order
from nmsparse.train.parallel import put_batch_sharded

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg].")
flags.DEFINE_multi_string("set", [], "key=value config override (repeatable).")
flags.DEFINE_integer("steps", 5, "Profiled steps.")
flags.DEFINE_string("out", "", "Write the summary JSON here.")
flags.mark_flag_as_required("config")

CLASSES = [("gemm", r"gemm|cutlass|sm90_xmma|nvjet|cublas|sparse|cusparselt|spmm"),
           ("attention", r"fmha|flash|attn|cudnn"),
           ("conv", r"conv|implicit|wgrad|dgrad"),
           ("triton", r"triton|pallas|prune"),
           ("copy", r"copy|memcpy|memset|transpose"),
           ("fusion", r"fusion|loop_|input_|reduce")]


def classify(name: str) -> str:
  low = name.lower()
  for cls, pat in CLASSES:
    if re.search(pat, low):
      return cls
  return "other"


def device_events(trace_dir: str):
  """(name, dur_us) of every event on a GPU track of the Perfetto trace under ``trace_dir``."""
  pattern = os.path.join(trace_dir, "**", "perfetto_trace.json.gz")
  path = sorted(glob.glob(pattern, recursive=True))[-1]
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  gpu = {pid for pid, n in names.items() if "gpu" in n.lower() and "host" not in n.lower()}
  return [(e["name"], float(e.get("dur", 0.0))) for e in events
          if e.get("ph") == "X" and e.get("pid") in gpu], sorted(set(names.values()))


def kernel_durations(f, *args, repeats: int = 5) -> dict:
  """Kernel name -> {count, mean_us} over ``repeats`` calls of the jitted ``f(*args)`` (after
  one untraced call), from a profiler trace: device time apart from host dispatch."""
  jax.block_until_ready(f(*args))
  trace_dir = tempfile.mkdtemp(prefix="trace_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(repeats):
      jax.block_until_ready(f(*args))
  events, _ = device_events(trace_dir)
  per = collections.defaultdict(list)
  for name, dur in events:
    per[name].append(dur)
  return {name: {"count": len(d), "mean_us": float(np.mean(d))} for name, d in per.items()}


def main(argv):
  del argv
  config = load_config(FLAGS.config)
  overrides = dict(s.split("=", 1) for s in FLAGS.set)
  config = apply_overrides(config, {k: parse_value(v) for k, v in overrides.items()})
  run = Run(config, tempfile.mkdtemp(prefix="profile_"))
  n = len(run.data.train_labels)
  order = put_batch_sharded(epoch_order(run.data_key, 0, n, config.batch_size), run.mesh, axis=1)
  args = lambda i: (*run.train_arrays, order, jnp.int32(i % order.shape[0]), run.step_key)
  for i in range(3):
    run.state, metrics = run.train_step(run.state, *args(i))
  jax.block_until_ready(metrics)
  trace_dir = tempfile.mkdtemp(prefix="trace_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    t0 = time.perf_counter()
    for i in range(FLAGS.steps):
      run.state, metrics = run.train_step(run.state, *args(i))
      jax.block_until_ready(metrics)
    wall = (time.perf_counter() - t0) / FLAGS.steps * 1e3
  events, tracks = device_events(trace_dir)
  per_name = collections.defaultdict(float)
  for name, dur in events:
    per_name[name] += dur / FLAGS.steps / 1e3
  per_class = collections.defaultdict(float)
  for name, ms in per_name.items():
    per_class[classify(name)] += ms
  top = sorted(per_name.items(), key=lambda kv: -kv[1])[:60]
  summary = dict(config=config.name, method=config.method, overrides=overrides,
                 device=jax.devices()[0].device_kind, jax_version=jax.__version__,
                 wall_ms_per_step=wall, busy_ms_per_step=sum(per_name.values()),
                 kernels_per_step=len(events) / FLAGS.steps, per_class_ms=dict(per_class),
                 top_kernels_ms=top, tracks=tracks)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(summary, f, indent=1)
  print(f"{config.name} {overrides}: wall {wall:.2f} ms/step, GPU busy "
        f"{summary['busy_ms_per_step']:.2f} ms, {summary['kernels_per_step']:.0f} kernels/step")
  for cls, ms in sorted(per_class.items(), key=lambda kv: -kv[1]):
    print(f"  {cls:10s} {ms:8.2f} ms")
  for name, ms in top[:15]:
    print(f"  {ms:8.3f}  {name[:110]}")


if __name__ == "__main__":
  app.run(main)
