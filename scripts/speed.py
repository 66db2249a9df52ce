"""Training-speed table (issue 5, SPEC §3): dense vs sparse train-step time, one model per process.

Measure one config (all variants in this one process, one GPU):
  python scripts/speed.py measure --config configs/resnet18_cifar10.py \
      --set data.data_dir=./data --out results/speed/resnet18.json
Merge the per-model files into ``results/speed.json`` and ``results/speed.md``:
  python scripts/speed.py merge --inputs 'results/speed/*.json' --out_dir results

Every variant is timed after warm-up as the median of ``--steps`` device-synchronised steps, with
and without the input pipeline; the ratio is dense / sparse on the step without data loading (the
pure training step); ``--with_data`` also times the runner's step with the input pipeline.
"""

from __future__ import annotations

import glob
import json
import os

import jax
from absl import app, flags, logging

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.train.metrics import git_sha, write_json
from nmsparse.train.timing import measure_step_time
from nmsparse.types import NMPattern

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg] (measure).")
flags.DEFINE_multi_string("set", [], "key=value config override (repeatable).")
flags.DEFINE_list("variants", ["bdwp:2:8:xla", "bdwp:2:8:pallas", "bdwp:2:4:xla",
                               "bdwp:2:4:pallas"], "method:N:M:implementation, after dense.")
flags.DEFINE_integer("steps", 50, "Timed steps per variant.")
flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation included).")
flags.DEFINE_bool("with_data", False, "Also time the step with the input pipeline.")
flags.DEFINE_string("out", "", "measure: JSON output path.")
flags.DEFINE_string("inputs", "results/speed/*.json", "merge: glob of per-model files.")
flags.DEFINE_string("out_dir", "results", "merge: where speed.json and speed.md go.")


def _parse_variant(text: str) -> tuple[str, str, str]:
  """``"method:N:M:implementation"`` -> its three parts, the pattern parsed by ``NMPattern``."""
  method, rest = text.split(":", 1)
  pattern, implementation = rest.rsplit(":", 1)
  return method, str(NMPattern.parse(pattern)), implementation


def measure(config_path: str, sets: dict, variants: list[str], warmup: int, steps: int,
            with_data: bool) -> list[dict]:
  """Dense first, then every sparse variant; one row per sparse variant (SPEC §3 keys)."""
  def timed(**overrides):
    config = apply_overrides(load_config(config_path),
                             {**sets, **overrides, "num_devices": 1, "progress_bar": False})
    row = measure_step_time(config, warmup, steps, with_data)
    logging.info("%s", row)
    return row

  dense = timed(method="dense", implementation="xla")
  rows = []
  for method, pattern, implementation in map(_parse_variant, variants):
    sparse = timed(method=method, pattern=pattern, implementation=implementation)
    rows.append({
        "model": dense["model"], "config": dense["config"], "method": method, "pattern": pattern,
        "implementation": sparse["implementation"], "batch": dense["global_batch"],
        "dtype": dense["dtype"], "device": dense["device"],
        "dense_step_ms": dense["step_ms_without_data"],
        "sparse_step_ms": sparse["step_ms_without_data"],
        "ratio": dense["step_ms_without_data"] / sparse["step_ms_without_data"],
        "dense_step_ms_with_data": dense["step_ms_with_data"],
        "sparse_step_ms_with_data": sparse["step_ms_with_data"],
        "ratio_with_data": (dense["step_ms_with_data"] / sparse["step_ms_with_data"]
                            if with_data else None),
        "steps": steps, "jax_version": jax.__version__, "git_sha": git_sha()})
  return rows


def _fmt(value) -> str:
  return "-" if value is None else f"{value:.3f}"


def markdown(rows: list[dict]) -> str:
  """The speed table: one line per model x variant, ratios > 1 mean sparse is faster."""
  devices = sorted({r["device"] for r in rows})
  lines = [
      "# Training speed: dense vs sparse train step",
      "",
      f"Device: {', '.join(devices)}. Each model was measured in its own process on one GPU; the "
      "ratio is dense step time / sparse step time (median of "
      f"{rows[0]['steps'] if rows else '?'} synchronised steps after warm-up, bf16 compute, fp32 "
      "master weights, the config's training batch). Ratios compare numbers from the same process "
      "only. `with data` (where measured) includes the on-device input pipeline.",
      "",
      "| model | batch | method | pattern | impl | dense ms | sparse ms | ratio | ratio with data |",
      "|---|---:|---|---|---|---:|---:|---:|---:|",
  ]
  for r in sorted(rows, key=lambda r: (r["model"], r["pattern"], r["implementation"])):
    lines.append(f"| {r['model']} | {r['batch']} | {r['method']} | {r['pattern']} | "
                 f"{r['implementation']} | {r['dense_step_ms']:.2f} | {r['sparse_step_ms']:.2f} | "
                 f"{r['ratio']:.3f} | {_fmt(r['ratio_with_data'])} |")
  return "\n".join(lines) + "\n"


def merge(pattern: str, out_dir: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(pattern)):
    with open(path) as f:
      rows.extend(json.load(f))
  if not rows:
    raise FileNotFoundError(f"No speed files match {pattern!r}.")
  write_json(os.path.join(out_dir, "speed.json"), rows)
  with open(os.path.join(out_dir, "speed.md"), "w") as f:
    f.write(markdown(rows))
  return rows


def main(argv):
  if len(argv) != 2 or argv[1] not in ("measure", "merge"):
    raise app.UsageError("usage: speed.py measure|merge [flags]")
  if argv[1] == "merge":
    print(markdown(merge(FLAGS.inputs, FLAGS.out_dir)))
    return
  if not FLAGS.config or not FLAGS.out:
    raise app.UsageError("measure needs --config and --out")
  sets = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in FLAGS.set)}
  rows = measure(FLAGS.config, sets, FLAGS.variants, FLAGS.warmup, FLAGS.steps, FLAGS.with_data)
  write_json(FLAGS.out, rows)
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
