"""Turns run results JSON (SPEC §3) into a markdown accuracy table and PNG plots.

  python -m experiments.report results/runs --out results

writes ``accuracy.md`` (one row per set of run-defining fields, SPEC §4: mean ± std over seeds,
gap to the dense run of the same fields with its seed noise, the GPU time the cell cost, duplicate
seeds flagged and counted once; bdwp minus srste and minus bimask with their noise; each config
once in the summaries, which give the mean gap over configs with its noise, its ``mask_every`` > 1
cells in a mask interval ablation table; each cell's wall and epoch times, final train accuracy
and GPU sharing in a run times table; with ``--planned CONFIG``, that config's sweep runs that have
no result yet),
``accuracy_vs_ratio.png`` (test accuracy against N/M density per schedule family: a ratio sweep is a
line through its dense cell, a single pattern a point, one colour per config and marker per method),
``curves_<config>.png`` (test accuracy per epoch of every run) and ``flips_<config>.png`` (the FF
mask flip rate per epoch, mean over seeds, per method; where the runs tracked it).
"""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Any, Iterable, NamedTuple

import numpy as np
from absl import app, flags, logging

from nmsparse.train.workdir import run_defining
from nmsparse.types import pattern_density

SOURCE = "_source"  # the file a loaded result came from
SHARED = "†"  # marks a GPU time counted on a GPU shared with other runs
REQUIRED = ("model", "dataset", "method", "pattern", "seed", "epochs", "test_accuracy", "device",
            "git_sha", "jax_version", "wall_time_s", "history")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder for accuracy.md and the plots.")
flags.DEFINE_multi_string("not_run", [], "'config=reason' for a table cell that was not run "
                          "(listed under the table, e.g. 'resnet18_cifar100=no CIFAR-100 data').")
flags.DEFINE_string("summary", "bdwp:2:8", "method:N:M whose gap to dense is summarised.")
flags.DEFINE_multi_string("planned", [], "Config file[:arg] whose sweep (experiments.sweep) the "
                          "report counts against RUNS_DIR, listing its runs with no result there.")


def load_results(runs_dir: str) -> list[dict[str, Any]]:
  """Every run result under ``runs_dir`` (``**/*.json``; a file holds an object or a list)."""
  results = []
  for path in sorted(glob.glob(os.path.join(runs_dir, "**", "*.json"), recursive=True)):
    with open(path) as f:
      data = json.load(f)
    for item in data if isinstance(data, list) else [data]:
      missing = [k for k in REQUIRED if k not in item]
      if missing:
        logging.warning("Skipping %s: not a run result (missing %s).", path, ", ".join(missing))
        continue
      results.append({**item, SOURCE: path})
  return results


def config_name(result: dict[str, Any]) -> str:
  return result.get("config", {}).get("name") or f"{result['model']}_{result['dataset']}"


# Run-defining fields (SPEC §4) that only sparse runs use: a dense run compares against every
# sparse variant of its config.
SPARSITY_FIELDS = ("sr_ste_lambda", "rules", "mask_every", "bimask_candidates", "bimask_refresh")


class Group(NamedTuple):
  """One table cell: runs that differ only in their seed."""

  config: str
  method: str
  pattern: str | None
  base: str  # JSON of the run-defining fields shared with the dense run
  sparsity: str  # JSON of SPARSITY_FIELDS ("" for dense)

  def dense(self) -> "Group":
    return Group(self.config, "dense", None, self.base, "")


def group_of(result: dict[str, Any]) -> Group:
  """The cell of ``result``: every run-defining field but the seed goes into the key."""
  fields = run_defining(result.get("config", {}))
  fields.update(model=result["model"], dataset=result["dataset"], epochs=result["epochs"])
  dense = result["method"] == "dense"
  sparsity = {k: fields.pop(k) for k in SPARSITY_FIELDS if k in fields}
  for key in ("method", "pattern", "seed"):
    fields.pop(key)
  return Group(config_name(result), result["method"], None if dense else result["pattern"],
               json.dumps(fields, sort_keys=True), "" if dense else json.dumps(sparsity, sort_keys=True))


def group_runs(results: Iterable[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
  """Runs by :class:`Group`; a second run of a group's seed is a duplicate, logged and left out
  (listed by :func:`duplicates`)."""
  groups = collections.defaultdict(list)
  for r in results:
    runs = groups[group_of(r)]
    if any(other["seed"] == r["seed"] for other in runs):
      logging.warning("Duplicate run %s (seed %s, same run-defining fields as %s): not counted.",
                      r.get(SOURCE), r["seed"], next(o.get(SOURCE) for o in runs
                                                     if o["seed"] == r["seed"]))
      continue
    runs.append(r)
  return groups


def duplicates(results: Iterable[dict[str, Any]]) -> list[str]:
  """``"file (cell label, seed s) duplicates file"`` for every run left out by :func:`group_runs`."""
  seen, out = {}, []
  labels = cell_labels({group_of(r) for r in results})
  for r in results:
    key = (group_of(r), r["seed"])
    if key in seen:
      out.append(f"{r.get(SOURCE)} ({labels[key[0]]} {r['method']} {r['pattern'] or '-'}, seed "
                 f"{r['seed']}) duplicates {seen[key]}")
    else:
      seen[key] = r.get(SOURCE)
  return out


def cell_labels(keys: Iterable[Group]) -> dict[Group, str]:
  """The config column of each cell: its config name, plus the fields that tell it apart from the
  other cells of that name (``r18 [epochs=3]``) when the name has several variants."""
  keys = list(keys)
  by_name = collections.defaultdict(list)
  for key in keys:
    by_name[key.config].append({**json.loads(key.base), **json.loads(key.sparsity or "{}")})
  labels = {}
  for key in keys:
    variants = by_name[key.config]
    mine = {**json.loads(key.base), **json.loads(key.sparsity or "{}")}
    differing = [f for f in sorted(mine) if any(v.get(f, mine[f]) != mine[f] for v in variants)]
    labels[key] = key.config + (f" [{', '.join(f'{f}={_short(mine[f])}' for f in differing)}]"
                                if differing else "")
  return labels


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True)
  return text if len(text) <= 40 else text[:37] + "..."


def _accs(runs: list[dict[str, Any]]) -> np.ndarray:
  return 100 * np.array([r["test_accuracy"] for r in runs])


def difference_noise(a: np.ndarray, b: np.ndarray, pooled: float | None = None) -> float | None:
  """Seed noise of ``mean(a) - mean(b)``: ``sqrt(var_a / n_a + var_b / n_b)`` (sample variances).
  A one-seed side takes ``pooled`` (:func:`pooled_seed_variance` of its config) when given, else
  the other side's variance; ``None`` when neither has a variance to give."""
  var_a = a.var(ddof=1) if len(a) > 1 else pooled
  var_b = b.var(ddof=1) if len(b) > 1 else pooled
  if var_a is None and var_b is None:
    return None
  var_a, var_b = (var_b if var_a is None else var_a), (var_a if var_b is None else var_b)
  return float(np.sqrt(var_a / len(a) + var_b / len(b)))


def pooled_seed_variance(groups: dict[Group, list[dict[str, Any]]]) -> dict[str, float]:
  """Per config, the pooled sample variance of its cells with two or more seeds,
  ``sum((n_i - 1) var_i) / sum(n_i - 1)`` (its methods are taken to share one seed noise): the
  variance a one-seed cell of that config is given. Configs without such a cell are left out.
  Pooling over every such cell, not one neighbour, keeps an unusually tight or loose cell from
  setting a one-seed difference's noise alone."""
  sums: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
  for key, runs in groups.items():
    if len(runs) > 1:
      accs = _accs(runs)
      sums[key.config][0] += (len(accs) - 1) * accs.var(ddof=1)
      sums[key.config][1] += len(accs) - 1
  return {config: total / dof for config, (total, dof) in sums.items()}


def gpu_hours(runs: list[dict[str, Any]]) -> float:
  """The GPU time of a cell: its runs' ``wall_time_s`` (one GPU per run) in hours."""
  return sum(float(r["wall_time_s"]) for r in runs) / 3600.0


def shared_gpu(runs: list[dict[str, Any]]) -> bool:
  """Whether a run of the cell shared its GPU with other runs (``gpu_lanes`` > 1, written by the
  runner from ``NMS_GPU_LANES``): its wall time then overstates its GPU time."""
  return any(int(r.get("gpu_lanes", 1)) > 1 for r in runs)


def schedule_family(config: str) -> str:
  """``"full"`` for a ``:full`` recipe's cells (config names ending ``_full``), else ``"short"``."""
  return "full" if config.endswith("_full") else "short"


def _noise(value: float | None) -> str:
  return "–" if value is None else f"{value:.2f}"


METHOD_ORDER = {"dense": 0, "bdwp": 1, "srste": 2, "bimask": 3}


def table_order(groups: dict[Group, list[dict[str, Any]]], labels: dict[Group, str]) -> list[Group]:
  """The cells in table order: by label, then method, density (densest first), pattern, sparsity."""
  return sorted(groups, key=lambda k: (labels[k], METHOD_ORDER.get(k.method, 9),
                                       -pattern_density(k.pattern), k.pattern or "", k.sparsity))


def markdown_table(groups: dict[Group, list[dict[str, Any]]]) -> str:
  """One row per cell: accuracy mean ± std (%) over seeds, gap to the dense cell with the same
  run-defining fields and its seed noise (:func:`difference_noise`), GPU hours."""
  labels, pooled = cell_labels(groups), pooled_seed_variance(groups)
  lines = ["| config | model | dataset | method | pattern | epochs | seeds | test acc (%) | "
           "gap to dense (pts) | gap noise (pts) | GPU time (h) | device |", "|" + "---|" * 12]
  for key in table_order(groups, labels):
    runs = groups[key]
    accs = 100 * np.array([r["test_accuracy"] for r in runs])
    std = f" ± {accs.std(ddof=1):.2f}" if len(accs) > 1 else ""
    dense = groups.get(key.dense())
    gap = "–" if not dense or key.method == "dense" else (
        f"{accs.mean() - 100 * np.mean([r['test_accuracy'] for r in dense]):+.2f}")
    noise = "–" if gap == "–" else _noise(
        difference_noise(accs, _accs(dense), pooled.get(key.config)))
    seeds = ",".join(str(s) for s in sorted(r["seed"] for r in runs))
    devices = ", ".join(sorted({r["device"] for r in runs}))
    lines.append(f"| {labels[key]} | {runs[0]['model']} | {runs[0]['dataset']} | {key.method} | "
                 f"{key.pattern or '–'} | {runs[0]['epochs']} | {seeds} | {accs.mean():.2f}{std} | "
                 f"{gap} | {noise} | {gpu_hours(runs):.2f}{SHARED if shared_gpu(runs) else ''} | "
                 f"{devices} |")
  return "\n".join(lines)


def _mean_acc(runs: list[dict[str, Any]]) -> float:
  return 100 * float(np.mean([r["test_accuracy"] for r in runs]))


def summary(groups: dict[Group, list[dict[str, Any]]], method: str, pattern: str,
            family: str | None = None, others: tuple[str, ...] = ("srste", "bimask")) -> str:
  """Gap of ``method pattern`` to dense per cell with its seed noise, their mean with its noise
  (the cells' noises taken as independent: ``sqrt(sum noise_i^2) / n``) and the worst, and the gap
  to each of ``others``' peer cell (:func:`peer`); with ``family`` (:func:`schedule_family`) over
  that family's cells only."""
  labels, pooled = cell_labels(groups), pooled_seed_variance(groups)
  others = tuple(o for o in others if o != method)
  rows = []
  for key in sorted((k for k in groups if k.method == method and k.pattern == pattern and
                     family in (None, schedule_family(k.config)) and
                     interval_base(groups, k) is None), key=lambda k: labels[k]):
    sparse, dense = groups[key], groups.get(key.dense())
    if dense:
      noise = difference_noise(_accs(sparse), _accs(dense), pooled.get(key.config))
      peers = [peer(groups, key, o) for o in others]
      versus = [None if g is None else _mean_acc(sparse) - _mean_acc(groups[g]) for g in peers]
      rows.append((labels[key], _mean_acc(sparse) - _mean_acc(dense), noise, len(sparse),
                   len(dense), versus))
  scope = "" if family is None else f" ({family} schedules)"
  if not rows:
    return f"No config{scope} has both dense and {method} {pattern} runs."
  gaps, noises = [r[1] for r in rows], [r[2] for r in rows]
  mean_noise = ("" if None in noises else
                f" ± {np.sqrt(np.sum(np.square(noises))) / len(noises):.2f}")
  worst = min(rows, key=lambda r: r[1])
  lines = [f"## Summary: {method} {pattern} vs dense{scope}", "",
           f"Mean gap over {len(rows)} configs: **{np.mean(gaps):+.2f}{mean_noise} pts**"
           f"{' (± its seed noise)' if mean_noise else ''}; worst: {worst[0]} {worst[1]:+.2f} pts. "
           "(Per config: mean over the seeds that ran.)", "",
           f"| config | gap to dense (pts) | gap noise (pts) | {method} seeds | dense seeds | " +
           "".join(f"{method} minus {o} (pts) | " for o in others).rstrip(),
           "|---|" + "---:|" * (4 + len(others))]
  for name, gap, noise, n_sparse, n_dense, versus in rows:
    cells = [name, f"{gap:+.2f}", _noise(noise), str(n_sparse), str(n_dense)]
    cells += ["–" if v is None else f"{v:+.2f}" for v in versus]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def mask_every_of(key: Group) -> int:
  return int(json.loads(key.sparsity or "{}").get("mask_every") or 1)


def interval_base(groups: dict[Group, list[dict[str, Any]]], key: Group) -> Group | None:
  """For a cell at ``mask_every`` k > 1: the cell it ablates, same in all but ``mask_every=1``
  (``None`` for other cells, or when that cell did not run). Summaries leave such ablation cells
  out, so a config counts once; :func:`interval_ablation` reports them."""
  if mask_every_of(key) == 1:
    return None
  base = key._replace(sparsity=json.dumps({**json.loads(key.sparsity), "mask_every": 1},
                                          sort_keys=True))
  return base if base in groups else None


def interval_ablation(groups: dict[Group, list[dict[str, Any]]]) -> str | None:
  """Each ``mask_every`` > 1 cell against its ``mask_every=1`` cell (with the seed noise of the
  difference) and against dense; ``None`` when there is none."""
  labels, pooled = cell_labels(groups), pooled_seed_variance(groups)
  keys = sorted((k for k in groups if interval_base(groups, k) is not None),
                key=lambda k: (k.config, k.method, str(k.pattern), mask_every_of(k)))
  if not keys:
    return None
  lines = ["## Mask interval ablation", "",
           "Masks recomputed every `mask_every` steps instead of every step (SPEC §1); minus "
           "every step = the difference to the same config at `mask_every=1`, with its seed noise.",
           "", "| config | method | pattern | mask_every | acc. (%) | seeds | minus every step (pts) "
           "| noise (pts) | gap to dense (pts) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for key in keys:
    mine, base = _accs(groups[key]), _accs(groups[interval_base(groups, key)])
    dense = groups.get(key.dense())
    gap = "–" if not dense else f"{mine.mean() - _accs(dense).mean():+.2f}"
    lines.append(f"| {labels.get(key.dense(), key.config)} | {key.method} | {key.pattern} | "
                 f"{mask_every_of(key)} | {mine.mean():.2f} | {len(mine)} | "
                 f"{mine.mean() - base.mean():+.2f} | "
                 f"{_noise(difference_noise(mine, base, pooled.get(key.config)))} | "
                 f"{gap} |")
  return "\n".join(lines)


def _span(values: list[float], fmt: str) -> str:
  """``"lo-hi"`` of ``values`` in ``fmt`` (one value, or all equal once formatted: that value)."""
  lo, hi = format(min(values), fmt), format(max(values), fmt)
  return lo if lo == hi else f"{lo}-{hi}"


def run_times(groups: dict[Group, list[dict[str, Any]]]) -> str | None:
  """Per cell whose runs logged ``epoch_time_s``: each run's wall time and median epoch time
  (their range over the cell's runs), the final epoch's train accuracy, and how the GPU was
  shared (``gpu_lanes``, ``gpu_mps``); ``None`` when no run logged epoch times."""
  labels = cell_labels(groups)
  rows = []
  for key in table_order(groups, labels):
    runs = groups[key]
    epochs = [[h["epoch_time_s"] for h in r["history"] if "epoch_time_s" in h] for r in runs]
    if not all(epochs):
      continue
    train = [r["history"][-1].get("train_accuracy") for r in runs]
    lanes = sorted({int(r.get("gpu_lanes", 1)) for r in runs})
    mps = {bool(r.get("gpu_mps", False)) for r in runs}
    rows.append(f"| {labels[key]} | {key.method} | {key.pattern or '–'} | {len(runs)} | "
                f"{_span([float(r['wall_time_s']) for r in runs], '.0f')} | "
                f"{_span([float(np.median(e)) for e in epochs], '.2f')} | "
                f"{'–' if None in train else _span([100 * t for t in train], '.2f')} | "
                f"{','.join(map(str, lanes))} | "
                f"{'some' if len(mps) > 1 else 'yes' if True in mps else 'no'} |")
  if not rows:
    return None
  return "\n".join([
      "## Run times", "",
      "Per run: wall time and median epoch time (range over the cell's runs; an epoch's time "
      "excludes evaluation), the final epoch's train accuracy (mean over its augmented batches), "
      "and the "
      "GPU's sharing: `gpu_lanes` = the runs the launcher trained on it at once (a run may have "
      "been alone for part of its time), MPS = under a CUDA MPS daemon.", "",
      "| config | method | pattern | runs | wall time (s) | median epoch (s) | final train acc "
      "(%) | gpu_lanes | MPS |", "|---|---|---|---:|---:|---:|---:|---:|---|", *rows])


def ratio_ablation(groups: dict[Group, list[dict[str, Any]]]) -> str | None:
  """Per config and method with two or more N:M patterns (same fields otherwise, every-step
  masks): each pattern's accuracy, its gap to dense, and its difference to the config's other
  patterns of the same density (2:4 against 4:8, 1:4 against 2:8: which N:M shape, at equal
  kept weights), each with its seed noise; ``None`` when no config has such a sweep."""
  labels, pooled = cell_labels(groups), pooled_seed_variance(groups)
  by = collections.defaultdict(list)
  for key in groups:
    if key.method != "dense" and mask_every_of(key) == 1:
      by[(labels[key], key.method, key.base, key.sparsity)].append(key)
  sweeps = sorted((k for k in by.items() if len(k[1]) > 1), key=lambda kv: kv[0][:2])
  if not sweeps:
    return None
  lines = ["## N:M ratio ablation", "",
           "Each pattern of a config's ratio sweep; same density = the difference to the config's "
           "other pattern(s) of equal N/M, with the seed noise of each difference.", "",
           "| config | method | pattern | density | acc. (%) | seeds | gap to dense (pts) | "
           "noise (pts) | same density (pts) |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
  for (label, method, _, _), keys in sweeps:
    keys.sort(key=lambda k: (-pattern_density(k.pattern), k.pattern))
    for key in keys:
      mine = _accs(groups[key])
      std = f" ± {mine.std(ddof=1):.2f}" if len(mine) > 1 else ""
      dense = groups.get(key.dense())
      gap, noise = "–", "–"
      if dense:
        gap = f"{mine.mean() - _accs(dense).mean():+.2f}"
        noise = _noise(difference_noise(mine, _accs(dense), pooled.get(key.config)))
      same = []
      for other in keys:
        if other != key and pattern_density(other.pattern) == pattern_density(key.pattern):
          theirs = _accs(groups[other])
          d = difference_noise(mine, theirs, pooled.get(key.config))
          same.append(f"{mine.mean() - theirs.mean():+.2f}"
                      f"{'' if d is None else f' ± {d:.2f}'} vs {other.pattern}")
      lines.append(f"| {label} | {method} | {key.pattern} | {pattern_density(key.pattern):.3g} | "
                   f"{mine.mean():.2f}{std} | {len(mine)} | {gap} | {noise} | "
                   f"{'; '.join(same) or '–'} |")
  return "\n".join(lines)


BIMASK_ONLY = ("bimask_candidates", "bimask_refresh")


def peer(groups: dict[Group, list[dict[str, Any]]], key: Group, method: str) -> Group | None:
  """The cell of ``method`` with ``key``'s config, fields and pattern (bimask's own fields aside)."""
  strip = lambda s: {k: v for k, v in json.loads(s or "{}").items() if k not in BIMASK_ONLY}
  return next((g for g in groups if g.method == method and g.config == key.config and
               g.base == key.base and g.pattern == key.pattern and
               strip(g.sparsity) == strip(key.sparsity)), None)


def comparisons(groups: dict[Group, list[dict[str, Any]]], method: str = "bdwp",
                others: tuple[str, ...] = ("srste", "bimask")) -> str:
  """Per ``method`` cell with a peer of ``others``: the accuracy differences and their seed noise
  (:func:`difference_noise`), next to each cell's seed std."""
  labels, pooled = cell_labels(groups), pooled_seed_variance(groups)
  head = "| config | pattern | " + f"{method} (%) | " + "".join(f"{o} (%) | " for o in others)
  head += "".join(f"{method} minus {o} (pts) | noise (pts) | " for o in others)
  lines = [f"## {method} vs " + ", ".join(others), "",
           "Mean ± sample std over seeds; noise = seed noise of the difference of means.", "",
           head.rstrip(), "|---|---|" + "---:|" * (1 + 3 * len(others))]
  rows = 0
  for key in sorted((k for k in groups if k.method == method), key=lambda k: (labels[k], k.pattern)):
    peers = {o: peer(groups, key, o) for o in others}
    if not any(peers.values()):
      continue
    rows += 1
    mine = _accs(groups[key])
    cell = lambda a: f"{a.mean():.2f}" + (f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else "")
    cells = [labels[key], key.pattern, cell(mine)]
    diffs = []
    for o in others:
      if peers[o] is None:
        cells.append("–")
        diffs += ["–", "–"]
      else:
        theirs = _accs(groups[peers[o]])
        cells.append(cell(theirs))
        diffs += [f"{mine.mean() - theirs.mean():+.2f}",
                  _noise(difference_noise(mine, theirs, pooled.get(key.config)))]
    lines.append("| " + " | ".join(cells + diffs) + " |")
  return "\n".join(lines) if rows else f"No config has {method} and one of {', '.join(others)}."


def flip_curves(runs: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
  """Mean FF mask flip fraction per epoch over the seeds of each method/pattern/mask_every of one
  config (``history[*].mask_flip_fraction``); empty when no run tracked flips."""
  series = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in runs:
    every = r.get("config", {}).get("mask_every", 1)
    label = f"{r['method']} {r['pattern']}" + ("" if every in (1, None) else f" every {every}")
    for h in r["history"]:
      if "mask_flip_fraction" in h:
        series[label][h["epoch"]].append(h["mask_flip_fraction"])
  return {label: (sorted(by_epoch), [float(np.mean(by_epoch[e])) for e in sorted(by_epoch)])
          for label, by_epoch in sorted(series.items())}


def plot_flips(curves: dict[str, tuple[list[int], list[float]]], title: str, path: str) -> None:
  """The :func:`flip_curves` of one config on a log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for label, (epochs, fractions) in curves.items():
    ax.plot(epochs, [max(f, 1e-7) for f in fractions], marker=".", label=label)
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("FF mask entries flipped in the epoch (fraction)")
  ax.set_title(f"Mask flip rate: {title}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


class RatioSeries(NamedTuple):
  """One method of one config variant in the ratio plot: mean test accuracy (%) and seed std per
  kept fraction N/M, the dense cell at 1.0 closing a ratio sweep's line."""

  config: str  # the config variant (cell label of its dense cell); one colour per variant
  method: str
  note: str  # "" or the sparsity fields telling this series from others of its config and method
  xs: list[float]
  ys: list[float]
  errs: list[float]  # 0 for one seed
  patterns: list[str]  # "dense" at 1.0
  line: bool  # a ratio sweep (two or more N:M patterns): drawn as a line through dense


def ratio_series(groups: dict[Group, list[dict[str, Any]]]) -> dict[str, list[RatioSeries]]:
  """The ratio plot's series, per schedule family (:func:`schedule_family`). A method of a config
  with two or more N:M patterns is a line from its sparsest pattern to the dense cell; one pattern
  (the 2:8 baselines, the mask-interval ablation) is a point."""
  labels = cell_labels(groups)
  by = collections.defaultdict(list)  # (config, base, method, sparsity) -> sparse cells
  for key in groups:
    if key.method != "dense":
      by[(key.config, key.base, key.method, key.sparsity)].append(key)
  variants = collections.Counter((c, b, m) for c, b, m, _ in by)
  out = collections.defaultdict(list)
  for (config, base, method, sparsity), keys in sorted(by.items()):
    keys.sort(key=lambda k: pattern_density(k.pattern))
    dense_key = keys[0].dense()
    dense = groups.get(dense_key)
    label = labels[dense_key] if dense else config
    note = ""
    if variants[(config, base, method)] > 1:  # e.g. bdwp at mask_every 1, 10 and 100
      note = labels[keys[0]][len(config):].strip()
    cells = [(pattern_density(k.pattern), groups[k], k.pattern) for k in keys]
    line = len(keys) > 1
    if line and dense:
      cells.append((1.0, dense, "dense"))
    accs = [_accs(runs) for _, runs, _ in cells]
    out[schedule_family(config)].append(RatioSeries(
        label, method, note, [x for x, _, _ in cells], [float(a.mean()) for a in accs],
        [float(a.std(ddof=1)) if len(a) > 1 else 0.0 for a in accs], [p for _, _, p in cells],
        line))
  return dict(out)


METHOD_STYLE = {"bdwp": ("o", "-"), "srste": ("s", "--"), "bimask": ("^", ":")}


def plot_ratio(groups: dict[Group, list[dict[str, Any]]], path: str) -> None:
  """:func:`ratio_series` with one panel per schedule family: a colour per config variant, a
  marker and line style per method, each config's dense accuracy as a star at 1.0, error bars the
  seed std; methods at the same pattern are set slightly apart along x."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  families, labels = ratio_series(groups), cell_labels(groups)
  dense = {}  # family -> config label -> (mean, std) of its dense cell
  for key, runs in groups.items():
    if key.method == "dense":
      accs = _accs(runs)
      dense.setdefault(schedule_family(key.config), {})[labels[key]] = (
          float(accs.mean()), float(accs.std(ddof=1)) if len(accs) > 1 else 0.0)
  names = sorted(families) or ["short"]
  fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 5.5), squeeze=False)
  for ax, family in zip(axes[0], names):
    series = families.get(family, [])
    configs = sorted({s.config for s in series})
    colour = {c: f"C{i % 10}" for i, c in enumerate(configs)}
    methods = sorted({s.method for s in series}, key=lambda m: (m not in METHOD_STYLE, m))
    shift = {m: 0.012 * (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    for s in series:
      marker, ls = METHOD_STYLE.get(s.method, ("D", "-."))
      xs = [x if p == "dense" else x + shift[s.method] for x, p in zip(s.xs, s.patterns)]
      ax.errorbar(xs, s.ys, yerr=s.errs, color=colour[s.config], marker=marker,
                  ls=ls if s.line else "none", ms=5, capsize=2, lw=1.2)
      if s.note:
        ax.annotate(s.note, (xs[0], s.ys[0]), textcoords="offset points", xytext=(5, -3),
                    fontsize=6, color=colour[s.config])
      if s.line:  # patterns of one density (1:4 and 2:8) share an x: name each point
        at = collections.Counter()
        for x, y, p in zip(xs, s.ys, s.patterns):
          if p != "dense":
            ax.annotate(p, (x, y), textcoords="offset points", xytext=(4, 3 - 10 * at[x]),
                        fontsize=6, color=colour[s.config])
            at[x] += 1
    for config in configs:
      if config in dense.get(family, {}):
        mean, std = dense[family][config]
        ax.errorbar([1.0], [mean], yerr=[std], color=colour[config], marker="*", ms=10,
                    ls="none", capsize=2)
    ticks = collections.defaultdict(set)  # kept fraction -> the patterns plotted there
    for x, p in ((x, p) for s in series for x, p in zip(s.xs, s.patterns) if p != "dense"):
      ticks[x].add(p)
    ax.set_xticks(sorted(ticks) + [1.0], [f"{', '.join(sorted(ticks[x]))}\n{x:g}"
                                         for x in sorted(ticks)] + ["dense\n1"], fontsize=7)
    ax.set_xlabel("N:M pattern, kept fraction N/M")
    ax.set_ylabel("test accuracy (%), mean ± seed std")
    ax.set_title(f"Accuracy vs N:M ratio ({family} schedules)")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour[c], lw=3, label=c) for c in configs]
    handles += [Line2D([], [], color="k", marker=METHOD_STYLE.get(m, ("D", "-."))[0],
                       ls=METHOD_STYLE.get(m, ("D", "-."))[1], label=m) for m in methods]
    handles.append(Line2D([], [], color="k", marker="*", ms=10, ls="none", label="dense"))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=3, frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(runs: list[dict[str, Any]], title: str, path: str) -> None:
  """Test (solid) and train (dashed) accuracy per epoch of every run of one config."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in sorted(runs, key=lambda r: (r["method"], str(r["pattern"]), r["seed"])):
    label = f"{r['method']} {'' if r['method'] == 'dense' else r['pattern']} s{r['seed']}"
    epochs = [h["epoch"] for h in r["history"] if "test_accuracy" in h]
    line, = ax.plot(epochs, [100 * h["test_accuracy"] for h in r["history"]
                             if "test_accuracy" in h], label=label)
    ax.plot([h["epoch"] for h in r["history"]],
            [100 * h["train_accuracy"] for h in r["history"]], ls="--", color=line.get_color(),
            alpha=0.5)
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%) (solid: test, dashed: train)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def planned_runs(configs: Iterable[str], runs_dir: str) -> tuple[int, list[str]]:
  """How many runs the configs' sweeps plan, and those without a result file in ``runs_dir`` (as
  ``nms-sweep --results_dir`` would count them finished)."""
  from experiments import sweep  # pylint: disable=g-import-not-at-top (defines its own flags)
  total, missing = 0, []
  for path in configs:
    for spec in sweep.expand(path, "", {}):
      total += 1
      if sweep.recorded_result(spec, {}, runs_dir) is None:
        every = "" if spec.mask_every is None else f" mask_every {spec.mask_every}"
        missing.append(f"{spec.name} {spec.method} {spec.pattern or '-'}{every} seed {spec.seed}")
  return total, missing


def write_report(runs_dir: str, out: str, not_run: Iterable[str] = (),
                 summarize: str = "bdwp:2:8", planned: Iterable[str] = ()) -> list[str]:
  """Writes the table and the plots; returns the written paths.

  ``not_run`` holds ``"config=reason"`` lines listed under the table; ``summarize`` is the
  ``method:N:M`` whose gap to dense gets a summary section; ``planned`` config files whose sweeps'
  unfinished runs are listed under the table (:func:`planned_runs`).
  """
  results = load_results(runs_dir)
  if not results:
    raise ValueError(f"No run results (*.json with keys {', '.join(REQUIRED)}) under {runs_dir}.")
  os.makedirs(out, exist_ok=True)
  groups = group_runs(results)
  written = [os.path.join(out, "accuracy_vs_ratio.png")]
  plot_ratio(groups, written[0])
  by_config = collections.defaultdict(list)
  for r in results:
    by_config[config_name(r)].append(r)
  plots = []
  for name, runs in sorted(by_config.items()):
    plots.append(f"curves_{name}.png")
    plot_curves(runs, name, os.path.join(out, plots[-1]))
    curves = flip_curves(runs)
    if curves:
      plots.append(f"flips_{name}.png")
      plot_flips(curves, name, os.path.join(out, plots[-1]))
  md = [f"# Accuracy ({len(results)} runs from `{runs_dir}`)", "",
        "Mean ± sample std over seeds; gap = mean minus the dense mean of the same config; gap noise "
        "= seed noise of that difference, sqrt(var/n + var_dense/n_dense), a one-seed side "
        "taking the pooled seed variance of its config's cells with two or more seeds (this noise "
        "also in the tables below); GPU time = the runs' wall_time_s summed (one GPU each).",
        "", markdown_table(groups), "",
        f"Total GPU time: {sum(gpu_hours(runs) for runs in groups.values()):.2f} h.", ""]
  if any(shared_gpu(runs) for runs in groups.values()):
    md[-1:] = ["", f"{SHARED} Some of the cell's runs shared their GPU with other runs (`gpu_lanes` "
               "> 1), for all or part of their time: their wall time overstates their GPU time.", ""]
  dups = duplicates(results)
  if dups:
    md += ["Duplicates (same run-defining fields and seed; only the first file is counted):", ""]
    md += [f"- {line}" for line in dups] + [""]
  planned = list(planned)
  if planned:
    total, missing = planned_runs(planned, runs_dir)
    md += [f"Planned by the sweeps of {', '.join(f'`{p}`' for p in planned)}: {total} runs, "
           f"{total - len(missing)} with a result here" + (", all of them." if not missing else
                                                           f"; not yet run ({len(missing)}):"), ""]
    md += [f"- {line}" for line in missing] + ([""] if missing else [])
  not_run = list(not_run)
  if not_run:
    md += ["Not run:", ""] + [f"- {line.partition('=')[0]}: {line.partition('=')[2]}"
                              for line in not_run] + [""]
  method, _, pattern = summarize.partition(":")
  families = sorted({schedule_family(k.config) for k in groups})
  for family in families if len(families) > 1 else [None]:
    md += [summary(groups, method, pattern, family), ""]
  ablations = [a for a in (ratio_ablation(groups), interval_ablation(groups), run_times(groups))
               if a]
  md += [comparisons(groups), ""] + [x for a in ablations for x in (a, "")] + [
         "![accuracy vs N:M ratio](accuracy_vs_ratio.png)", ""]
  md += [f"![{p}]({p})" for p in plots]
  written.append(os.path.join(out, "accuracy.md"))
  with open(written[-1], "w") as f:
    f.write("\n".join(md) + "\n")
  written += [os.path.join(out, p) for p in plots]
  return written


def main(argv):
  if len(argv) != 2 or not FLAGS.out:
    raise app.UsageError("usage: python -m experiments.report RUNS_DIR --out DIR")
  for path in write_report(argv[1], FLAGS.out, FLAGS.not_run, FLAGS.summary, FLAGS.planned):
    print(path)


if __name__ == "__main__":
  app.run(main)
