"""Is ``implementation=None`` (the per-layer automatic choice) ever slower than ``pallas`` on the
CIFAR configs? Both train steps of each config in one process, timed in interleaved rounds.

GPU (the five CIFAR-10 configs, one process, one GPU; build the native extension first so that
``None`` may choose ``sparse_tc`` where ``nmsparse/ops/cards.py`` says it wins):
  python -m nmsparse.native.build && python scripts/auto_vs_pallas.py \
      --set method=bdwp --set pattern=2:8 --out results/auto_vs_pallas.json
CPU smoke run (the timings mean nothing there):
  python scripts/auto_vs_pallas.py --config configs/resnet9_cifar10.py:smoke --impls auto,xla \
      --rounds 2 --steps 2 --out /tmp/auto_vs_xla.json

Per config, two runs that differ only in ``implementation`` (``--impls A,B``, ``auto`` = None) train
on synthetic images of the config's shape (its model, batch and dtype; no data files) and are timed
with the batch train step on one fixed prepared batch, as ``measure_step_time`` does "without data".
After the warm-up (compilation) of both, each of ``--rounds`` rounds times ``--steps`` pipelined
steps of A and of B (one device sync per variant), the order alternating between rounds to cancel
drift. Reported per config: each variant's median per-step ms over the rounds; ratio = B ms / A ms
(>= 1: A is not slower) with the min and max of the per-round ratio; the implementation each sparse
layer runs under each variant (read from the step's jaxpr, where ``implementation=None`` is already
resolved); and ``same_program``, whether the two lowered steps are the same StableHLO.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections import Counter
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from experiments.config_io import apply_overrides, load_config, parse_value
from nmsparse.ops import get_implementation
from nmsparse.testing.jaxpr import equations
from nmsparse.train.loop import Run
from nmsparse.train.metrics import device_name, git_sha, quiet_library_logs, write_json
from nmsparse.train.step import make_batch_train_step
from nmsparse.train.timing import fixed_batch, pipelined_step_ms

CIFAR_CONFIGS = ["configs/resnet9_cifar10.py", "configs/resnet18_cifar10.py",
                 "configs/resnet50_cifar10.py", "configs/vgg19_cifar10.py",
                 "configs/vit_cifar10.py"]
AUTO = "auto"  # the --impls name of implementation=None
FORWARD_PRIMITIVES = ("nm_dense_fwd", "nm_conv_fwd")

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("config", CIFAR_CONFIGS, "Config file[:arg] (repeatable).")
flags.DEFINE_multi_string("set", [], "key=value config override for every config (repeatable).")
flags.DEFINE_list("impls", [AUTO, "pallas"], "The two variants A,B: implementation names, "
                  f"{AUTO!r} = None (the per-layer choice).")
flags.DEFINE_integer("rounds", 8, "Interleaved timing rounds.")
flags.DEFINE_integer("steps", 10, "Pipelined steps per variant per round (one sync at the end).")
flags.DEFINE_integer("warmup", 3, "Synchronised steps per variant before the rounds (the first "
                     "compiles).")
flags.DEFINE_bool("synthetic", True, "Train on synthetic images of the config's shape (one batch "
                  "of them); --nosynthetic reads the config's data (set data.data_dir).")
flags.DEFINE_string("out", None, "JSON output path (rewritten after every config).")
flags.mark_flag_as_required("out")


def implementation_of(label: str) -> str | None:
  """``--impls`` name -> the config's ``implementation`` (``auto`` -> None).

  Raises:
    ValueError: an unknown implementation name.
  """
  if label == AUTO:
    return None
  get_implementation(label)
  return label


def variant_config(config_path: str, sets: dict[str, Any], label: str, synthetic: bool) -> Any:
  """``config_path`` with ``sets``, one device, no progress bar and ``label``'s implementation;
  ``synthetic``: a synthetic training set of one batch (the timed step reads one fixed batch)."""
  config = apply_overrides(load_config(config_path), {**sets, "num_devices": 1,
                                                     "progress_bar": False})
  overrides = {"implementation": implementation_of(label)}
  if synthetic:
    overrides.update({"data.source": "synthetic", "data.data_dir": "",
                      "data.synthetic_train": config.batch_size})
  return apply_overrides(config, overrides)


def layer_paths(step, state, x, y) -> dict[str, str]:
  """``{layer path: implementation}`` of every sparse op call in ``step(state, x, y)``'s jaxpr.

  The path is the call's name stack after its first entry (the model, wrapped in ``jvp(...)``):
  the Flax module path, e.g. ``layer1/conv``; the implementation is the one its primitive runs.
  """
  paths = {}
  for eqn in equations(jax.make_jaxpr(step)(state, x, y)):
    if eqn.primitive.name in FORWARD_PRIMITIVES:
      module_path = "/".join(str(eqn.source_info.name_stack).split("/")[1:])
      paths[module_path or eqn.primitive.name] = eqn.params["cfg"].implementation
  return dict(sorted(paths.items()))


def program_text(step, state, x, y) -> str:
  """The lowered StableHLO of ``step(state, x, y)`` without location metadata."""
  text = step.lower(state, x, y).as_text(debug_info=False)
  text = re.sub(r"^#loc.*\n", "", text, flags=re.M)
  return re.sub(r" loc\([^()]*(\([^()]*\)[^()]*)*\)", "", text)


def first_difference(a: str, b: str) -> dict[str, Any] | None:
  """The first line where the two programs differ (``None`` if they are the same)."""
  if a == b:
    return None
  la, lb = a.splitlines(), b.splitlines()
  i = next((i for i, (p, q) in enumerate(zip(la, lb)) if p != q), min(len(la), len(lb)))
  line = lambda lines: lines[i][:300] if i < len(lines) else None
  return {"line": i, "a": line(la), "b": line(lb), "lines": [len(la), len(lb)]}


class Variant:
  """One run of the pair: its batch train step, its state, what it compiled to and its times."""

  def __init__(self, config_path: str, sets: dict[str, Any], label: str, synthetic: bool):
    self.label = label
    self.config = variant_config(config_path, sets, label, synthetic)
    self.run = Run(self.config, tempfile.mkdtemp(prefix="auto_vs_pallas_"))
    self.step = make_batch_train_step(self.run.model, self.run.mesh, self.config.data.num_classes,
                                      self.config.label_smoothing)
    self.round_ms: list[float] = []
    self.host_ms: list[float] = []

  def inspect(self, x, y) -> None:
    """Records the sparse layers' implementations and the lowered program (traces, no compile)."""
    self.paths = layer_paths(self.step, self.run.state, x, y)
    self.program = program_text(self.step, self.run.state, x, y)

  def warm_up(self, x, y, steps: int) -> None:
    """``steps`` synchronised steps; ``first_step_s``: the first one's seconds (compilation)."""
    for i in range(steps):
      start = time.perf_counter()
      self.run.state, metrics = self.step(self.run.state, x, y)
      jax.block_until_ready(metrics)
      if i == 0:
        self.first_step_s = time.perf_counter() - start

  def time_round(self, x, y, steps: int) -> float:
    """``steps`` steps enqueued back to back, one sync; appends and returns the per-step ms."""
    self.run.state, ms, host = pipelined_step_ms(self.step, self.run.state, lambda i: (x, y),
                                                 steps, chunk=steps)
    self.round_ms.append(ms)
    self.host_ms.append(host)
    return ms

  def summary(self) -> dict[str, Any]:
    return {"label": self.label, "implementation": self.config.implementation,
            "step_ms": float(np.median(self.round_ms)), "round_ms": self.round_ms,
            "host_dispatch_ms": float(np.median(self.host_ms)),
            "first_step_s": self.first_step_s, "layer_paths": self.paths,
            "path_counts": dict(Counter(self.paths.values())),
            "program_sha256": hashlib.sha256(self.program.encode()).hexdigest()}


def compare(config_path: str, sets: dict[str, Any], impls: list[str], warmup: int, rounds: int,
            steps: int, synthetic: bool) -> dict[str, Any]:
  """Both variants of one config, warmed up, then timed in ``rounds`` interleaved rounds."""
  pair = [Variant(config_path, sets, label, synthetic) for label in impls]
  a, b = pair
  x, y = fixed_batch(a.run)
  for v in pair:
    v.inspect(x, y)
    v.warm_up(x, y, warmup)
  ratios = []
  for r in range(rounds):
    for v in (pair if r % 2 == 0 else pair[::-1]):
      v.time_round(x, y, steps)
    ratios.append(b.round_ms[-1] / a.round_ms[-1])
  c = a.config
  variants = [v.summary() for v in pair]
  row = {"config": c.name, "config_file": config_path, "model": c.model, "method": c.method,
         "pattern": None if c.method == "dense" else c.pattern, "dtype": c.dtype,
         "batch": c.batch_size, "data_source": c.data.source, "overrides": sets,
         "impls": list(impls), "variants": variants,
         "ratio": variants[1]["step_ms"] / variants[0]["step_ms"],
         "ratio_min": min(ratios), "ratio_max": max(ratios), "round_ratios": ratios,
         "same_program": a.program == b.program,
         "first_difference": first_difference(a.program, b.program),
         "sparse_tc_unavailable": get_implementation("sparse_tc").available(),
         "rounds": rounds, "steps": steps, "warmup": warmup, "device": device_name(),
         "jax_version": jax.__version__, "git_sha": git_sha()}
  logging.info("%s: %s", c.name, {k: row[k] for k in ("ratio", "ratio_min", "ratio_max",
                                                      "same_program")})
  return row


def _counts(counts: dict[str, int]) -> str:
  return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "no sparse layer"


def markdown(rows: list[dict[str, Any]]) -> str:
  """One line per config: both variants' ms, the ratio B/A with its per-round spread, the
  programs' identity and the implementations A's sparse layers run."""
  a, b = rows[0]["impls"]
  lines = [f"{rows[0]['device']}, jax {rows[0]['jax_version']}, {rows[0]['git_sha']}: ratio = "
           f"{b} ms / {a} ms (>= 1: {a} is not slower), median over {rows[0]['rounds']} "
           f"interleaved rounds of {rows[0]['steps']} pipelined steps, [min, max] of the rounds.",
           "",
           f"| config | method | pattern | batch | {a} ms | {b} ms | ratio | spread | "
           f"same program | {a} layers |",
           "|---|---|---|---:|---:|---:|---:|---|---|---|"]
  for r in rows:
    va, vb = r["variants"]
    lines.append(f"| {r['config']} | {r['method']} | {r['pattern']} | {r['batch']} | "
                 f"{va['step_ms']:.2f} | {vb['step_ms']:.2f} | {r['ratio']:.3f} | "
                 f"[{r['ratio_min']:.3f}, {r['ratio_max']:.3f}] | {r['same_program']} | "
                 f"{_counts(va['path_counts'])} |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  if len(FLAGS.impls) != 2:
    raise app.UsageError(f"--impls names two variants (e.g. {AUTO},pallas), got {FLAGS.impls}.")
  for label in FLAGS.impls:
    implementation_of(label)
  if FLAGS.rounds < 1 or FLAGS.steps < 1 or FLAGS.warmup < 1:
    raise app.UsageError("--rounds, --steps and --warmup must be at least 1.")
  quiet_library_logs()
  sets = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in FLAGS.set)}
  rows = []
  for config_path in FLAGS.config:
    rows.append(compare(config_path, sets, FLAGS.impls, FLAGS.warmup, FLAGS.rounds, FLAGS.steps,
                        FLAGS.synthetic))
    write_json(FLAGS.out, rows)
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
