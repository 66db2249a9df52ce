"""Train-step time of a config with and without the input pipeline, on 1..N local devices.

"with data" is the runner's step: on-device gather from the replicated uint8 training set, random
crop/flip, normalise, forward/backward, update. "without data" is the same update on one fixed,
already prepared batch. Per-step times are device-synchronised; the median over ``--steps`` steps
after ``--warmup`` is reported (SPEC §3). Per-device batch stays ``config.batch_size`` (weak
scaling) unless ``--fixed_global_batch``.

  python scripts/step_time.py --config configs/resnet18_cifar10.py --num_devices 1,2,4 \
      --set data.data_dir=./data --out results/step_time_resnet18.json
  python scripts/step_time.py ... --num_devices 1,4 --processes 4   # 4 GPUs as 4 processes
  python scripts/step_time.py ... --set mask_every=100 --card_rule fused_mask_source=True

``--card_rule`` replaces fields of the card's measured path rule (``nmsparse.ops.cards``) for the
measurement, to time a path before the rule takes it; each row records what it replaced.

One process driving several GPUs launches every GPU's kernels from its own host threads; with
``--processes N`` each GPU gets its own process (``jax.distributed`` over localhost), as multi-host
training runs anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags, logging

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.ops import cards
from nmsparse.train.metrics import write_json
from nmsparse.train.parallel import initialize_distributed
from nmsparse.train.timing import measure_step_time

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg].")
flags.DEFINE_multi_string("set", [], "key=value config override (repeatable).")
flags.DEFINE_string("num_devices", "1", "Comma-separated device counts to measure.")
flags.DEFINE_integer("steps", 50, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation included).")
flags.DEFINE_bool("fixed_global_batch", False, "Keep config.batch_size as the global batch.")
flags.DEFINE_string("out", "", "Write the measurements as JSON here.")
flags.DEFINE_multi_string("card_rule", [], "field=value: a field of the card's path rule "
                          "(nmsparse.ops.cards.CardRule) replaced for the measurement "
                          "(repeatable; recorded as card_rule_override).")
flags.DEFINE_bool("without_data", True, "Also time the step on a fixed prepared batch.")
flags.DEFINE_bool("probes", False, "Also time the step without the gradient all-reduce and the "
                  "all-reduce alone (data-parallel diagnosis).")
flags.DEFINE_integer("processes", 0, "Measure the largest device count as this many processes on "
                     "this host (one GPU each, jax.distributed over localhost) instead of one "
                     "process driving every GPU; the smaller counts run in this process after.")
flags.DEFINE_integer("process_id", -1, "Internal: this is child process N of --processes.")
flags.DEFINE_string("coordinator", "", "Internal: the children's jax.distributed coordinator.")
flags.DEFINE_string("child_out", "", "Internal: where child 0 writes its measurement.")
flags.mark_flag_as_required("config")


def card_rule_override() -> dict:
  """``--card_rule`` as fields and values (``true``/``false`` as Python's)."""
  fields = {}
  for item in FLAGS.card_rule:
    key, text = item.split("=", 1)
    fields[key] = {"true": True, "false": False}.get(text.lower(), parse_value(text))
  return fields


def measure(config, num_devices: int) -> dict:
  """One device count: median step ms with and without data loading."""
  with config.unlocked():
    config.num_devices = num_devices
    if not FLAGS.fixed_global_batch:
      config.batch_size *= num_devices
  override = card_rule_override()
  with cards.overridden(**override):
    row = measure_step_time(config, FLAGS.warmup, FLAGS.steps, without_data=FLAGS.without_data,
                            probes=FLAGS.probes)
  row["xla_flags"] = os.environ.get("XLA_FLAGS", "")
  row["card_rule_override"] = override
  return row


def run_child(sets) -> None:
  """One of ``--processes`` processes: joins the others, then measures on every global device."""
  import jax  # pylint: disable=g-import-not-at-top
  initialize_distributed(coordinator_address=FLAGS.coordinator, num_processes=FLAGS.processes,
                         process_id=FLAGS.process_id)
  config = apply_overrides(load_config(FLAGS.config), {**sets, "progress_bar": False})
  row = measure(config, jax.device_count())
  row.update(processes=jax.process_count(), local_devices=jax.local_device_count())
  if FLAGS.process_id == 0:
    write_json(FLAGS.child_out, row)


def spawn_children(count: int) -> dict:
  """Runs ``--processes`` copies of this script (child ``i`` sees only GPU ``i``); returns child
  0's row. Runs before this process touches a device, so no GPU memory is held here."""
  port = 20000 + os.getpid() % 20000
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name  # child 0 overwrites it
  argv = [a for a in sys.argv[1:] if not a.startswith(("--processes", "--num_devices", "--out"))]
  procs = []
  for i in range(count):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(i)}
    procs.append(subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv, f"--processes={count}",
         f"--process_id={i}", f"--coordinator=localhost:{port}", f"--child_out={out}"], env=env))
  codes = [p.wait() for p in procs]
  if any(codes):
    raise RuntimeError(f"--processes={count}: children exited with {codes}.")
  with open(out) as f:
    return json.load(f)


def main(argv):
  del argv
  sets = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in FLAGS.set)}
  if FLAGS.process_id >= 0:
    run_child(sets)
    return
  counts = [int(s) for s in FLAGS.num_devices.split(",")]
  multi = spawn_children(FLAGS.processes) if FLAGS.processes else None
  rows = []
  for k in counts:
    if multi is not None and k == FLAGS.processes:
      rows.append(multi)
      continue
    config = apply_overrides(load_config(FLAGS.config), {**sets, "progress_bar": False})
    rows.append(measure(config, k))
    logging.info("%s", rows[-1])
  first = rows[0]
  fmt = lambda v, spec: "-" if v is None else format(v, spec)
  print(f"{'devices':>7} {'batch':>6} {'ms synced':>10} {'ms piped':>9} {'ms no data':>11} "
        f"{'no-sync ms':>11} {'allreduce':>10} {'host ms':>8} {'img/s piped':>12} {'scaling':>8} {'piped':>6}"
        f"   ({first['device']}, {first['config']} {first['method']} {first['pattern']})")
  for r in rows:
    r["scaling_vs_first"] = r["images_per_s_with_data"] / first["images_per_s_with_data"]
    r["pipelined_scaling_vs_first"] = (r["pipelined_images_per_s_with_data"]
                                       / first["pipelined_images_per_s_with_data"])
    print(f"{r['num_devices']:>7} {r['global_batch']:>6} {fmt(r['step_ms_with_data'], '10.2f')} "
          f"{fmt(r['pipelined_step_ms_with_data'], '9.2f')} "
          f"{fmt(r['step_ms_without_data'], '11.2f')} {fmt(r.get('no_sync_step_ms'), '11.2f')} "
          f"{fmt(r.get('allreduce_ms'), '10.3f')} {fmt(r.get('host_dispatch_ms'), '8.2f')} "
          f"{r['pipelined_images_per_s_with_data']:>12.0f} {r['scaling_vs_first']:>7.2f}x "
          f"{r['pipelined_scaling_vs_first']:>5.2f}x")
  if FLAGS.out:
    write_json(FLAGS.out, rows)


if __name__ == "__main__":
  app.run(main)
