"""Turns run results JSON (SPEC §3) into a markdown accuracy table and PNG plots.

  python -m experiments.report results/runs --out results

writes ``accuracy.md`` (mean ± std over seeds, gap to the dense run of the same config),
``accuracy_vs_ratio.png`` (test accuracy against N/M density, one line per model and method) and
``curves_<config>.png`` (test accuracy per epoch of every run).
"""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Any, Iterable

import numpy as np
from absl import app, flags, logging

from nmsparse.types import pattern_density

REQUIRED = ("model", "dataset", "method", "pattern", "seed", "epochs", "test_accuracy", "device",
            "git_sha", "jax_version", "wall_time_s", "history")

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder for accuracy.md and the plots.")
flags.DEFINE_multi_string("not_run", [], "'config=reason' for a table cell that was not run "
                          "(listed under the table, e.g. 'resnet18_cifar100=no CIFAR-100 data').")
flags.DEFINE_string("summary", "bdwp:2:8", "method:N:M whose gap to dense is summarised.")


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
      results.append(item)
  return results


def config_name(result: dict[str, Any]) -> str:
  return result.get("config", {}).get("name") or f"{result['model']}_{result['dataset']}"


Group = tuple[str, str, str | None]


def group_runs(results: Iterable[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
  """``(config name, method, pattern) -> runs``; dense runs have pattern ``None``."""
  groups = collections.defaultdict(list)
  for r in results:
    pattern = None if r["method"] == "dense" else r["pattern"]
    groups[(config_name(r), r["method"], pattern)].append(r)
  return groups


def markdown_table(groups: dict[Group, list[dict[str, Any]]]) -> str:
  """One row per (config, method, pattern): accuracy mean ± std (%) over seeds, gap to dense."""
  method_order = {"dense": 0, "bdwp": 1, "srste": 2, "bimask": 3}
  lines = ["| config | model | dataset | method | pattern | epochs | seeds | test acc (%) | "
           "gap to dense (pts) | device |", "|" + "---|" * 10]
  for key in sorted(groups, key=lambda k: (k[0], method_order.get(k[1], 9), -pattern_density(k[2]),
                                           k[2] or "")):
    name, method, pattern = key
    runs = groups[key]
    accs = 100 * np.array([r["test_accuracy"] for r in runs])
    std = f" ± {accs.std(ddof=1):.2f}" if len(accs) > 1 else ""
    dense = groups.get((name, "dense", None))
    gap = "–" if not dense or method == "dense" else (
        f"{accs.mean() - 100 * np.mean([r['test_accuracy'] for r in dense]):+.2f}")
    seeds = ",".join(str(s) for s in sorted(r["seed"] for r in runs))
    epochs = ",".join(sorted({str(r["epochs"]) for r in runs}))
    devices = ", ".join(sorted({r["device"] for r in runs}))
    lines.append(f"| {name} | {runs[0]['model']} | {runs[0]['dataset']} | {method} | "
                 f"{pattern or '–'} | {epochs} | {seeds} | {accs.mean():.2f}{std} | {gap} | "
                 f"{devices} |")
  return "\n".join(lines)


def _mean_acc(runs: list[dict[str, Any]]) -> float:
  return 100 * float(np.mean([r["test_accuracy"] for r in runs]))


def summary(groups: dict[Group, list[dict[str, Any]]], method: str, pattern: str) -> str:
  """Gap of ``method pattern`` to dense per config, its mean and worst, and its gap to srste."""
  rows = []
  for name in sorted({k[0] for k in groups}):
    sparse, dense = groups.get((name, method, pattern)), groups.get((name, "dense", None))
    if sparse and dense:
      srste = groups.get((name, "srste", pattern))
      rows.append((name, _mean_acc(sparse) - _mean_acc(dense), len(sparse), len(dense),
                   None if not srste or method == "srste" else _mean_acc(sparse) - _mean_acc(srste)))
  if not rows:
    return f"No config has both dense and {method} {pattern} runs."
  gaps = [r[1] for r in rows]
  worst = min(rows, key=lambda r: r[1])
  lines = [f"## Summary: {method} {pattern} vs dense", "",
           f"Mean gap over {len(rows)} configs: **{np.mean(gaps):+.2f} pts**; worst: {worst[0]} "
           f"{worst[1]:+.2f} pts. (Per config: mean over the seeds that ran.)", "",
           f"| config | gap to dense (pts) | {method} seeds | dense seeds | {method} minus srste (pts) |",
           "|---|---:|---:|---:|---:|"]
  for name, gap, n_sparse, n_dense, vs_srste in rows:
    lines.append(f"| {name} | {gap:+.2f} | {n_sparse} | {n_dense} | "
                 f"{'–' if vs_srste is None else f'{vs_srste:+.2f}'} |")
  return "\n".join(lines)


def plot_ratio(groups: dict[Group, list[dict[str, Any]]], path: str) -> None:
  """Test accuracy against kept fraction N/M (dense at 1.0), one line per config and method."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5))
  names = sorted({k[0] for k in groups})
  for name in names:
    dense = groups.get((name, "dense", None))
    for method in sorted({k[1] for k in groups if k[0] == name and k[1] != "dense"}):
      keys = sorted((k for k in groups if k[0] == name and k[1] == method),
                    key=lambda k: pattern_density(k[2]))
      xs = [pattern_density(k[2]) for k in keys] + ([1.0] if dense else [])
      ys = [100 * np.mean([r["test_accuracy"] for r in groups[k]]) for k in keys]
      ys += [100 * np.mean([r["test_accuracy"] for r in dense])] if dense else []
      line, = ax.plot(xs, ys, marker="o", label=f"{name} {method}")
      for key, x, y in zip(keys, xs, ys):
        ax.annotate(key[2], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6,
                    color=line.get_color())
  ax.set_xlabel("kept fraction N/M (1.0 = dense)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title("Accuracy vs N:M ratio")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
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


def write_report(runs_dir: str, out: str, not_run: Iterable[str] = (),
                 summarize: str = "bdwp:2:8") -> list[str]:
  """Writes the table and the plots; returns the written paths.

  ``not_run`` holds ``"config=reason"`` lines listed under the table; ``summarize`` is the
  ``method:N:M`` whose gap to dense gets a summary section.
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
  md = [f"# Accuracy ({len(results)} runs from `{runs_dir}`)", "",
        "Mean ± sample std over seeds; gap = mean minus the dense mean of the same config.", "",
        markdown_table(groups), ""]
  not_run = list(not_run)
  if not_run:
    md += ["Not run:", ""] + [f"- {line.partition('=')[0]}: {line.partition('=')[2]}"
                              for line in not_run] + [""]
  method, _, pattern = summarize.partition(":")
  md += [summary(groups, method, pattern), "", "![accuracy vs N:M ratio](accuracy_vs_ratio.png)",
         ""]
  md += [f"![{p}]({p})" for p in plots]
  written.append(os.path.join(out, "accuracy.md"))
  with open(written[-1], "w") as f:
    f.write("\n".join(md) + "\n")
  written += [os.path.join(out, p) for p in plots]
  return written


def main(argv):
  if len(argv) != 2 or not FLAGS.out:
    raise app.UsageError("usage: python -m experiments.report RUNS_DIR --out DIR")
  for path in write_report(argv[1], FLAGS.out, FLAGS.not_run, FLAGS.summary):
    print(path)


def run() -> None:
  """The ``nms-report`` entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
