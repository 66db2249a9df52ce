"""Expands configs' ``sweep`` grids (methods x patterns x seeds [x mask_every]) into runs and trains
them: in this
process one after another (``--gpus 0``), or as subprocesses, one per GPU (``--gpus N``, each with
its own ``CUDA_VISIBLE_DEVICES``). Every run's config is checked before any run starts. Finished
runs (``results.json`` in the workdir, or the run's result JSON in ``--results_dir`` with the same
run-defining fields) are skipped, so a sweep can be restarted, also on a fresh machine from the
committed results; unfinished ones resume from their checkpoints. Sweeps may share a workdir root:
a run that another process trains (it holds the workdir's lock) is skipped, not trained twice.
With ``--deadline`` (Unix time) a run is started only if its estimated time (:func:`estimate`: the
slowest recorded run like it in ``--results_dir``) ends before the deadline; the sweep goes on to
runs that fit, and the skipped ones are left for a later sweep (each skip logged); ``--dry_run``
prints each unfinished run's estimate.

  python -m experiments.sweep --config configs/quickstart.py --workdir_root /tmp/qs
  python -m experiments.sweep --config configs/resnet9_cifar10.py --config configs/vit_cifar10.py \
      --workdir_root runs --results_dir results/runs --gpus 4 --set data.data_dir=./data
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any

from absl import app, flags, logging
import numpy as np

from experiments.config_io import apply_overrides, load_config, parse_value

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("config", None, "Packaged config name(s) or .py file(s), with an "
                          "optional :arg (repeatable).")
flags.DEFINE_string("workdir_root", None, "Each run's workdir is <root>/<name>/<method>[_NxM]/seed<s>.")
flags.DEFINE_string("results_dir", "", "Also copy every results JSON here (e.g. results/runs).")
flags.DEFINE_integer("gpus", 0, "0: run in this process, one after another; N: N subprocesses, one "
                     "per GPU (CUDA_VISIBLE_DEVICES=i).")
flags.DEFINE_multi_string("set", [], "key=value override for every run, e.g. epochs=5 or "
                          "data.data_dir=./data (repeatable).")
flags.DEFINE_string("filter", "", "Only runs whose name contains this substring.")
flags.DEFINE_bool("dry_run", False, "Print the runs and exit.")
flags.DEFINE_float("deadline", 0.0, "Unix time by which a run must end to be started (its time "
                   "estimated from the runs recorded in --results_dir; a run without an estimate "
                   "starts); 0: none.")
flags.mark_flags_as_required(["config", "workdir_root"])


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of a sweep: the config file (with arg), its settings and where it goes."""

  config_path: str
  name: str
  method: str
  pattern: str | None
  seed: int
  workdir: str
  mask_every: int | None = None  # None: the config's own

  def overrides(self) -> dict[str, Any]:
    out = {"method": self.method, "seed": self.seed}
    if self.pattern is not None:
      out["pattern"] = self.pattern
    if self.mask_every is not None:
      out["mask_every"] = self.mask_every
    return out


def expand(config_path: str, workdir_root: str, sets: dict[str, Any]) -> list[RunSpec]:
  """The config's sweep grids as runs (dense runs carry no pattern; duplicates dropped). A grid's
  optional ``mask_every`` list runs every point once per value (workdir tag ``_every<k>``)."""
  config = apply_overrides(load_config(config_path), sets)
  runs, seen = [], set()
  for grid in config.sweep:
    for method in grid["methods"]:
      for pattern in ([None] if method == "dense" else grid["patterns"]):
        for every in grid.get("mask_every", [None]):
          for seed in grid["seeds"]:
            if (method, pattern, every, seed) in seen:
              continue
            seen.add((method, pattern, every, seed))
            tag = method if pattern is None else f"{method}_{pattern.replace(':', 'x')}"
            tag += "" if every is None else f"_every{every}"
            runs.append(RunSpec(config_path, config.name, method, pattern, int(seed),
                                os.path.join(workdir_root, config.name, tag, f"seed{seed}"),
                                None if every is None else int(every)))
  return runs


def run_config(spec: RunSpec, sets: dict[str, Any], results_dir: str) -> Any:
  """The config one run trains: its file, the sweep's ``--set`` values, its method/pattern/seed."""
  return apply_overrides(load_config(spec.config_path),
                         {**sets, **spec.overrides(), "results_dir": results_dir})


def run_in_process(spec: RunSpec, sets: dict[str, Any], results_dir: str) -> dict[str, Any]:
  """Trains one run in this process."""
  from nmsparse.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  return train_and_evaluate(run_config(spec, sets, results_dir), spec.workdir)


def parse_sets(items: list[str]) -> dict[str, str]:
  """``--set`` values as typed (``key=value``).

  Raises:
    app.UsageError: for an item without ``=`` or without a key.
  """
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise app.UsageError(f"--set {item!r}: expected key=value, e.g. --set epochs=10 or "
                           "--set data.data_dir=./data.")
    out[key] = value
  return out


def recorded_result(spec: RunSpec, sets: dict[str, Any], results_dir: str) -> str | None:
  """The path of ``spec``'s result JSON in ``results_dir`` (``<run name>.json``), if there is one:
  the run is then finished, as when its workdir holds ``results.json``. Lets a sweep on a fresh
  machine skip the runs whose results were committed (``--results_dir results/runs``)."""
  if not results_dir:
    return None
  from nmsparse.train import run_name  # pylint: disable=g-import-not-at-top
  path = os.path.join(results_dir, run_name(run_config(spec, sets, results_dir)) + ".json")
  return path if os.path.exists(path) else None


def check_recorded(spec: RunSpec, sets: dict[str, Any], results_dir: str) -> None:
  """Raises ``ValueError`` naming the run-defining fields (SPEC §4) where the result recorded for
  ``spec`` in ``results_dir`` differs from the run's config: that file is another run's."""
  path = recorded_result(spec, sets, results_dir)
  if path is None:
    return
  from nmsparse.train.workdir import changed_fields  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    recorded = json.load(f).get("config")
  if not recorded:
    raise ValueError(f"{path} records no config, so it cannot stand for this run; move it away.")
  changed = changed_fields(recorded, run_config(spec, sets, results_dir))
  if changed:
    raise ValueError(f"{path} records another run ({', '.join(changed)} differ); move it away or "
                     "use another --results_dir.")


def finished(spec: RunSpec, sets: dict[str, Any], results_dir: str) -> bool:
  """Whether the run has a result: ``results.json`` in its workdir, or one in ``results_dir``."""
  return (os.path.exists(os.path.join(spec.workdir, "results.json")) or
          recorded_result(spec, sets, results_dir) is not None)


def _recorded_runs(results_dir: str) -> list[dict[str, Any]]:
  out = []
  for name in sorted(os.listdir(results_dir)) if results_dir and os.path.isdir(results_dir) else []:
    if name.endswith(".json"):
      try:
        with open(os.path.join(results_dir, name)) as f:
          out.append(json.load(f))
      except (OSError, ValueError):
        continue
  return out


def checkpoint_step(workdir: str) -> int:
  """The newest checkpoint's step in ``workdir`` (0: none), where a resumed run starts."""
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
           if d.isdigit()] if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
  return max(steps, default=0)


def estimate(spec: RunSpec, results_dir: str, lanes: int = 1,
             mps: bool = False) -> tuple[float | None, str]:
  """``spec``'s expected wall time in seconds, and where the figure comes from: the slowest of the
  runs recorded in ``results_dir`` of the same config and method with its pattern and
  ``mask_every``, else of the same config and method, else of the same config; among them, those
  recorded with ``lanes`` runs sharing their GPU (``gpu_lanes``) and under CUDA MPS or not as
  ``mps`` says (``gpu_mps``) where there are any, else those with ``lanes``. The lanes come
  before the tiers: a closer tier's runs at another lane count are used only when no tier has a
  run at ``lanes`` (2026-12-03: ResNet18's one 4:8 run, trained alone in 331 s, would otherwise
  have set a two-lane 4:8 run's estimate, where two lanes took 465-600 s a bdwp run). Each
  recorded run counts as ``wall_time_s / steps`` a step, for the steps left after the workdir's
  newest checkpoint. ``(None, why)`` when nothing like it was recorded."""
  recorded = _recorded_runs(results_dir)
  runs = [r for r in recorded
          if r.get("config", {}).get("name") == spec.name and r.get("wall_time_s")
          and r.get("steps")]
  every = lambda r: r["config"].get("mask_every", 1)
  mine = spec.mask_every
  if mine is None:  # the config's own
    mine = apply_overrides(load_config(spec.config_path), spec.overrides()).get("mask_every", 1)
  tiers = [("its method, pattern and mask interval",
            lambda r: (r["method"], r.get("pattern"), every(r)) ==
            (spec.method, spec.pattern, mine)),
           ("its method", lambda r: r["method"] == spec.method),
           ("its config", lambda r: True)]
  for same_lanes, (what, like) in itertools.product((True, False), tiers):
    alike = [r for r in runs if like(r)]
    if same_lanes:
      alike = [r for r in alike if int(r.get("gpu_lanes", 1)) == lanes]
    alike = [r for r in alike if bool(r.get("gpu_mps", False)) == mps] or alike
    if alike:
      slowest = max(alike, key=_per_step)
      steps = slowest["steps"]
      left = max(steps - checkpoint_step(spec.workdir), 0)
      source = f"the slowest of {len(alike)} recorded run(s) of {what}"
      if not same_lanes:
        source += f" (none recorded with {lanes} lane(s))"
      source += f" ({slowest['name']}"
      factor = 1.0
      if slowest["method"] != spec.method:  # another method's run: scaled as other configs show
        factor, why = method_factor(recorded, spec.method, slowest["method"],
                                    slowest.get("device"))
        source += f", x{factor:.2f}: {why}"
      return _per_step(slowest) * factor * left, f"{source}), {left} of {steps} steps left"
  return None, f"no run of {spec.name} recorded in {results_dir or '(no --results_dir)'}"


def _per_step(result: dict[str, Any]) -> float:
  return result["wall_time_s"] / result["steps"]


def method_factor(results: list[dict[str, Any]], method: str, other: str,
                  device: str | None = None) -> tuple[float, str]:
  """How much slower a step of ``method`` is than one of ``other``: the median, over the configs
  with recorded runs of both, of the ratio of their slowest runs' time a step; 1 when no config
  has both (said). With ``device`` (the GPU of the run it scales), the configs with runs of both
  on that device only, where there are any: another GPU's ratio can differ (Bi-Mask's search, for
  one, costs more or less beside the matmuls)."""
  def ratios(runs):
    slowest: dict[tuple[str, str], float] = {}
    for r in runs:
      if r.get("wall_time_s") and r.get("steps") and r["method"] in (method, other):
        key = (r.get("config", {}).get("name"), r["method"])
        slowest[key] = max(slowest.get(key, 0.0), _per_step(r))
    return [slowest[(c, method)] / slowest[(c, other)] for c, m in slowest
              if m == other and (c, method) in slowest]
  found, where = [], ""
  if device:
    found, where = ratios([r for r in results if r.get("device") == device]), f" on {device}"
  if not found:
    found, where = ratios(results), ""
  if not found:
    return 1.0, f"no config has runs of both {method} and {other}"
  return (float(np.median(found)),
          f"{method}/{other} step time, median of {len(found)} configs{where}")


def gpu_sharing() -> tuple[int, bool]:
  """How this process shares its GPU, as the runner records it: ``NMS_GPU_LANES`` runs at a time
  (``gpu_lanes``), under CUDA MPS when ``NMS_GPU_MPS`` is 1 (``gpu_mps``)."""
  return int(os.environ.get("NMS_GPU_LANES", "1")), os.environ.get("NMS_GPU_MPS") == "1"


def startable(spec: RunSpec, sets: dict[str, Any], results_dir: str,
              deadline: float = 0.0) -> bool:
  """Whether to start the run now: sweeps sharing a workdir root (``scripts/gpu_table.sh``'s lanes)
  skip a run another process finished since this sweep began, or trains now (it holds the
  workdir's lock, ``nmsparse.train.workdir.hold_workdir``); with a ``deadline`` (Unix time), a run
  whose :func:`estimate` ends after it (one without an estimate starts). Each skip is logged."""
  from nmsparse.train.workdir import workdir_busy  # pylint: disable=g-import-not-at-top
  if finished(spec, sets, results_dir):
    logging.info("%s %s seed %d: finished elsewhere since the sweep began; skipped.", spec.name,
                 spec.method, spec.seed)
    return False
  if workdir_busy(spec.workdir):
    logging.warning("%s %s seed %d: another process trains it in %s; skipped here.", spec.name,
                    spec.method, spec.seed, spec.workdir)
    return False
  if deadline:
    seconds, source = estimate(spec, results_dir, *gpu_sharing())
    left = deadline - time.time()
    if seconds is not None and seconds > left:
      logging.info("%s %s %s seed %d: estimated %.0f s (%s), %.0f s left before the deadline; "
                   "left for a later sweep.", spec.name, spec.method, spec.pattern or "-",
                   spec.seed, seconds, source, left)
      return False
    logging.info("%s %s %s seed %d: %s s before the deadline, estimated %s (%s).", spec.name,
                 spec.method, spec.pattern or "-", spec.seed, f"{left:.0f}",
                 "unknown" if seconds is None else f"{seconds:.0f} s", source)
  return True


def preflight(runs: list[RunSpec], sets: dict[str, Any], results_dir: str) -> None:
  """Checks every run of the sweep before any starts: its config builds, passes the runner's
  start-up validation and fits its workdir (SPEC §4), and a result recorded for it in
  ``results_dir`` is of the same run-defining fields.

  Raises:
    ValueError: listing every run that would fail, and why.
  """
  # pylint: disable=g-import-not-at-top
  from nmsparse.train.setup import validate_config
  from nmsparse.train.workdir import check_workdir
  problems = []
  for spec in runs:
    try:
      config = run_config(spec, sets, results_dir)
      validate_config(config)
      check_workdir(config, spec.workdir)
      check_recorded(spec, sets, results_dir)
    except (KeyError, ValueError) as e:
      problems.append(f"  {spec.name} {spec.method} {spec.pattern or '-'} seed {spec.seed}: {e}")
  if problems:
    raise ValueError(f"Not starting the sweep: {len(problems)} of {len(runs)} runs cannot run:\n"
                     + "\n".join(problems))


def command(spec: RunSpec, sets: dict[str, str], results_dir: str) -> list[str]:
  """The ``experiments.main`` command line of one run (``sets`` as typed on the command line)."""
  flags_ = {**sets, **spec.overrides(), "results_dir": results_dir}
  return ([sys.executable, "-m", "experiments.main", f"--config={spec.config_path}",
           f"--workdir={spec.workdir}"] + [f"--config.{k}={v}" for k, v in flags_.items()])


def run_on_gpus(runs: list[RunSpec], gpus: int, sets: dict[str, str], results_dir: str,
                deadline: float = 0.0) -> None:
  """Runs subprocesses, at most one per GPU; each logs to ``<workdir>/log.txt``."""
  pending, active = list(runs), {}
  parsed = {k: parse_value(v) for k, v in sets.items()}
  while pending or active:
    for gpu in range(gpus):
      if gpu not in active and pending:
        spec = pending.pop(0)
        if not startable(spec, parsed, results_dir, deadline):
          continue
        os.makedirs(spec.workdir, exist_ok=True)
        log = open(os.path.join(spec.workdir, "log.txt"), "a")
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        logging.info("GPU %d: %s", gpu, " ".join(command(spec, sets, results_dir)))
        active[gpu] = (spec, log, subprocess.Popen(command(spec, sets, results_dir), env=env,
                                                   stdout=log, stderr=subprocess.STDOUT))
    time.sleep(1.0)
    for gpu, (spec, log, proc) in list(active.items()):
      if proc.poll() is not None:
        log.close()
        del active[gpu]
        status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        logging.info("GPU %d: %s %s %s seed %d %s; log %s", gpu, spec.name, spec.method,
                     spec.pattern, spec.seed, status, os.path.join(spec.workdir, "log.txt"))


def summarize(runs: list[RunSpec], sets: dict[str, Any] | None = None, results_dir: str = "") -> str:
  """A plain-text table of the runs' test accuracies (from the workdir, else ``results_dir``) and
  the gap to dense of the same config."""
  rows, dense = [], {}
  for spec in runs:
    path = os.path.join(spec.workdir, "results.json")
    if not os.path.exists(path):
      path = recorded_result(spec, sets or {}, results_dir) or path
    acc = None
    if os.path.exists(path):
      with open(path) as f:
        acc = json.load(f)["test_accuracy"]
    if spec.method == "dense" and acc is not None:
      dense.setdefault(spec.name, []).append(acc)
    rows.append((spec, acc))
  lines = [f"{'config':<28} {'method':<8} {'pattern':<8} {'seed':>4} {'test acc':>9} {'gap':>7}"]
  for spec, acc in rows:
    ref = dense.get(spec.name)
    gap = "" if acc is None or not ref else f"{100 * (acc - sum(ref) / len(ref)):+.2f}"
    text = "missing" if acc is None else f"{acc:.4f}"
    lines.append(f"{spec.name:<28} {spec.method:<8} {str(spec.pattern or '-'):<8} {spec.seed:>4} "
                 f"{text:>9} {gap:>7}")
  return "\n".join(lines)


def main(argv):
  del argv
  raw_sets = parse_sets(FLAGS.set)  # as typed, for subprocess flags
  sets = {k: parse_value(v) for k, v in raw_sets.items()}
  runs = [r for path in FLAGS.config for r in expand(path, FLAGS.workdir_root, sets)
          if FLAGS.filter in f"{r.name}_{r.method}_{r.pattern}_s{r.seed}"]
  todo = [r for r in runs if not finished(r, sets, FLAGS.results_dir)]
  logging.info("Sweep: %d runs, %d to do", len(runs), len(todo))
  for r in runs:
    line = f"{r.name} {r.method} {r.pattern or '-'} seed {r.seed} -> {r.workdir}"
    if r not in todo:
      line += " (done)"
    elif FLAGS.dry_run and FLAGS.results_dir:  # what --deadline would go by
      seconds, source = estimate(r, FLAGS.results_dir, *gpu_sharing())
      line += " (estimated: " + ("unknown" if seconds is None else f"{seconds:.0f} s") + \
          f", {source})"
    print(line)
  if FLAGS.dry_run:
    return
  preflight(runs, sets, FLAGS.results_dir)
  if FLAGS.gpus > 0:
    run_on_gpus(todo, FLAGS.gpus, raw_sets, FLAGS.results_dir, FLAGS.deadline)
  else:
    from nmsparse.train.workdir import WorkdirBusyError  # pylint: disable=g-import-not-at-top
    for spec in todo:
      if not startable(spec, sets, FLAGS.results_dir, FLAGS.deadline):
        continue
      try:
        run_in_process(spec, sets, FLAGS.results_dir)
      except WorkdirBusyError as e:  # it began elsewhere between the check and the lock
        logging.warning("%s Skipped here.", e)
  print(summarize(runs, sets, FLAGS.results_dir))


def run() -> None:
  """The ``nms-sweep`` entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
