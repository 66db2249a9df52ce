"""Predictions of the SAT model for run configs: per-pattern stage times and speedups, a sensitivity
sweep, the GPU ratios measured for the same models, and the markdown/JSON/plot writers."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any, Callable, Sequence

from nmsparse.sat.layers import ModelLayers
from nmsparse.sat.model import STAGES, SATConfig, StepCost, step_cost
from nmsparse.types import NMPattern

PATTERNS = ("2:4", "2:8", "1:8", "4:8")
PAPER_SPEEDUP_2_8 = 1.75  # paper abstract: 2:8 over dense training, averaged over five models
DENSE = "dense"


def _step(ml: ModelLayers, pattern: str, hw: SATConfig, batch: int | None = None) -> StepCost:
  layers = ml.for_pattern(None if pattern == DENSE else pattern)
  return step_cost(layers, batch or ml.batch_size, ml.optimizer_states, hw)


def _flop_bound(ml: ModelLayers, pattern: str) -> float:
  """Dense / sparse GEMM FLOPs of a bdwp step (SPEC §1): the speedup if only MACs counted."""
  dense = sparse = 0.0
  for layer in ml.for_pattern(None if pattern == DENSE else pattern):
    d = 1.0 if layer.pattern is None else layer.pattern.density
    bp = 1.0 if layer.needs_bp else 0.0
    dense += layer.gemm_flops * (2.0 + bp)
    sparse += layer.gemm_flops * (d + bp * d + 1.0)
  return dense / sparse


def predict(ml: ModelLayers, hw: SATConfig, patterns: Sequence[str] = PATTERNS) -> list[dict]:
  """One row per pattern (``"dense"`` first): ms per stage, step ms, speedup over dense on the same
  array, memory-bound share of the step, the dataflow each GEMM stage chose, and the FLOP bound."""
  dense = _step(ml, DENSE, hw)
  rows = []
  for pattern in (DENSE,) + tuple(patterns):
    step = dense if pattern == DENSE else _step(ml, pattern, hw)
    flows = collections.Counter(f"{c.stage}:{c.dataflow}" for c in step.layers
                                if c.dataflow != "-")
    rows.append(dict(
        model=ml.model, config=ml.name, batch=ml.batch_size, pattern=pattern, method="bdwp",
        pregenerate=hw.pregenerate,
        stage_ms={s: 1e3 * step.stages[s] for s in STAGES},
        stage_bytes={s: step.bytes[s] for s in STAGES},
        memory_bound_ms={s: 1e3 * step.memory_bound_s[s] for s in STAGES},
        step_ms=1e3 * step.total_s, speedup=dense.total_s / step.total_s,
        flop_bound=_flop_bound(ml, pattern), dataflows=dict(sorted(flows.items()))))
  return rows


def _hw_axis(field: str, values: Sequence[Any]) -> list[tuple[Any, SATConfig, int | None]]:
  return [(v, SATConfig(**{field: v}), None) for v in values]


def sweep_points() -> dict[str, list[tuple[Any, SATConfig, int | None]]]:
  """The sensitivity sweep: ``{axis: [(value, hardware, batch or None)]}``; every other parameter
  stays at its default (the array axis changes rows and cols together)."""
  bw = SATConfig().dram_bandwidth
  return {
      "array (rows = cols)": [(n, SATConfig(rows=n, cols=n), None) for n in (8, 16, 32, 64, 128)],
      "DRAM bandwidth (GB/s)": [(round(bw * f / 1e9, 1), SATConfig(dram_bandwidth=bw * f), None)
                                for f in (1 / 64, 1 / 16, 1 / 4, 1 / 2, 1, 2)],
      "clock (MHz)": [(int(f / 1e6), SATConfig(clock_hz=f), None)
                      for f in (100e6, 150e6, 200e6, 300e6, 400e6, 800e6)],
      "tile overhead (cycles)": _hw_axis("tile_overhead_cycles", (0, 64, 256, 1024)),
      "sparse utilisation": _hw_axis("sparse_utilisation", (1.0, 0.9, 0.8, 0.7, 0.6)),
      "buffer fraction": _hw_axis("buffer_fraction", (0.01, 0.05, 0.2, 0.5, 0.9)),
      "pre-generation (SORE)": _hw_axis("pregenerate", (True, False)),
      "dataflow": _hw_axis("dataflow", ("best", "ws", "os")),
      "batch": [(b, SATConfig(), b) for b in (8, 32, 128, 512)],
  }


def sweep(ml: ModelLayers, pattern: str = "2:8",
          points: dict[str, list[tuple[Any, SATConfig, int | None]]] | None = None) -> list[dict]:
  """Speedup of ``pattern`` over dense for every sweep point (same hardware for both)."""
  rows = []
  for axis, values in (points or sweep_points()).items():
    for value, hw, batch in values:
      dense, sparse = _step(ml, DENSE, hw, batch), _step(ml, pattern, hw, batch)
      rows.append(dict(model=ml.model, pattern=pattern, axis=axis, value=value,
                       batch=batch or ml.batch_size, dense_step_ms=1e3 * dense.total_s,
                       sparse_step_ms=1e3 * sparse.total_s,
                       speedup=dense.total_s / sparse.total_s,
                       memory_bound_share=sum(sparse.memory_bound_s.values()) / sparse.total_s))
  return rows


def sensitivity_ranking(sweep_rows: Sequence[dict]) -> list[tuple[str, float, float]]:
  """``(axis, min speedup, max speedup)`` over each axis's swept values, widest range first."""
  by_axis: dict[str, list[float]] = collections.defaultdict(list)
  for r in sweep_rows:
    by_axis[r["axis"]].append(r["speedup"])
  ranges = [(a, min(v), max(v)) for a, v in by_axis.items()]
  return sorted(ranges, key=lambda r: r[1] - r[2])


def solve_for_average(models: Sequence[ModelLayers], target: float,
                      make_hw: Callable[[float], SATConfig], lo: float, hi: float,
                      pattern: str = "2:8", steps: int = 40) -> float | None:
  """The parameter value in ``[lo, hi]`` at which the average ``pattern`` speedup over ``models``
  equals ``target`` (bisection; ``None`` if the range does not bracket it)."""

  def average(x: float) -> float:
    hw = make_hw(x)
    return sum(_step(m, DENSE, hw).total_s / _step(m, pattern, hw).total_s
               for m in models) / len(models)

  f_lo, f_hi = average(lo) - target, average(hi) - target
  if f_lo * f_hi > 0:
    return None
  for _ in range(steps):
    mid = 0.5 * (lo + hi)
    f_mid = average(mid) - target
    if f_mid * f_lo > 0:
      lo, f_lo = mid, f_mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def gpu_ratios(speed_json: str) -> dict[tuple[str, str], list[dict]]:
  """Measured GPU rows of a ``results/speed*.json`` file by ``(model, pattern)`` (bdwp only);
  ``{}`` if the file does not exist."""
  if not speed_json or not os.path.exists(speed_json):
    return {}
  with open(speed_json) as f:
    rows = json.load(f)
  rows = rows if isinstance(rows, list) else [rows]
  out: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
  for r in rows:
    if r.get("method") == "bdwp" and r.get("pattern"):
      out[(r["model"], r["pattern"])].append(r)
  return dict(out)


def average_speedup(rows: Sequence[dict], pattern: str) -> float:
  values = [r["speedup"] for r in rows if r["pattern"] == pattern]
  return sum(values) / len(values)


def _fmt_value(v: Any) -> str:
  if isinstance(v, float) and (v >= 1e5 or (0 < v < 1e-2)):
    return f"{v:.4g}"
  return str(v)


def write_markdown(path: str, hw: SATConfig, rows: Sequence[dict], sweep_rows: Sequence[dict],
                   gpu: dict[tuple[str, str], list[dict]], no_pregen: Sequence[dict],
                   calibration: dict[str, float | None], command: str) -> None:
  """The report: parameters with sources, per-model table, 2:8 average vs the paper, GPU ratios,
  the sensitivity sweep and its ranking."""
  models = list(dict.fromkeys(r["model"] for r in rows))
  patterns = list(dict.fromkeys(r["pattern"] for r in rows))
  lines = [
      "# SAT model: predicted speedup of N:M sparse training over dense on the paper's accelerator",
      "",
      "Predictions of an analytical model (`nmsparse/sat/`), not measurements: the paper's full",
      "text is not available, so everything beyond the facts marked \"datasheet\" or \"paper",
      "abstract\" below is an assumption. Layers come from the runner's FLOP walk",
      "(`nmsparse/train/flops.py`) of each config's model at its training batch; method bdwp (FF",
      "and BP both N:M), WU dense. Regenerate with:",
      "",
      f"    {command}",
      "",
  ]
  avg = average_speedup(rows, "2:8") if "2:8" in patterns else None
  if avg is not None:
    lines += [
        f"**2:8, average over {len(models)} models: predicted {avg:.2f}x** (paper: "
        f"{PAPER_SPEEDUP_2_8:.2f}x on the VCU1525; GEMM-FLOP bound "
        f"{sum(r['flop_bound'] for r in rows if r['pattern'] == '2:8') / len(models):.2f}x).", ""]
  if calibration:
    lines.append("What would close the gap to 1.75x (every other parameter at its default):")
    lines.append("")
    for name, value in calibration.items():
      lines.append(f"- {name}: " + ("not reached in the searched range" if value is None
                                    else f"{value:.3g}"))
    lines.append("")
  lines += ["## Hardware parameters", "", "| parameter | value | source |", "|---|---|---|"]
  sources = SATConfig.parameter_sources()
  for field in dataclasses.fields(hw):
    lines.append(f"| `{field.name}` | {_fmt_value(getattr(hw, field.name))} | "
                 f"{sources[field.name]} |")
  lines += ["", "## Predicted step time per stage (ms, one training step at the config's batch)",
            "", "| model | batch | pattern | FF | BP | WU | WUVE | SORE | step | speedup | "
            "FLOP bound | memory-bound |", "|---|---:|---|" + "---:|" * 10]
  for r in rows:
    s = r["stage_ms"]
    mem = sum(r["memory_bound_ms"].values()) / r["step_ms"]
    lines.append(f"| {r['model']} | {r['batch']} | {r['pattern']} | " +
                 " | ".join(f"{s[k]:.1f}" for k in STAGES) +
                 f" | {r['step_ms']:.1f} | {r['speedup']:.2f}x | {r['flop_bound']:.2f}x | "
                 f"{100 * mem:.1f}% |")
  lines += ["", "`memory-bound`: share of the step spent in layer stages whose DRAM time exceeds "
            "their compute time. `FLOP bound`: dense / sparse GEMM FLOPs of the step (SPEC §1); it",
            "weights layers by FLOPs, the model by time, so sparse layers that map poorly onto the",
            "array (more time than their FLOP share, all of it sped up) can put a prediction a",
            "little above it. WUVE and SORE are per-step costs, so they weigh more at small batch.",
            ""]
  lines += ["## Speedup over dense by pattern", "", "| model | " + " | ".join(patterns[1:]) + " |",
            "|---|" + "---:|" * (len(patterns) - 1)]
  for m in models:
    cells = [f"{r['speedup']:.2f}x" for p in patterns[1:] for r in rows
             if r["model"] == m and r["pattern"] == p]
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  lines.append("| **average** | " + " | ".join(
      f"**{average_speedup(rows, p):.2f}x**" for p in patterns[1:]) + " |")
  if no_pregen:
    lines += ["", "Without pre-generation (`pregenerate=False`: FF and BP read the dense weights "
              "and prune online, no SORE): " + ", ".join(
                  f"{r['model']} {r['pattern']} {r['speedup']:.2f}x" for r in no_pregen) + "."]
  lines += ["", "## Predicted SAT speedup next to the measured GPU ratio", ""]
  if gpu:
    devices = sorted({g["device"] for v in gpu.values() for g in v})
    lines += [f"GPU: dense step / bdwp step measured on {', '.join(devices)} "
              "(results/speed.json, one process per model, config batch, bf16). SAT: this model.",
              "", "| model | pattern | SAT predicted | GPU measured (impl: ratio) |",
              "|---|---|---:|---|"]
    for r in rows:
      key = (r["model"], r["pattern"])
      if key in gpu:
        measured = ", ".join(f"{g['implementation']}: {g['ratio']:.3f}x"
                             for g in sorted(gpu[key], key=lambda g: g["implementation"]))
        lines.append(f"| {r['model']} | {r['pattern']} | {r['speedup']:.2f}x | {measured} |")
  else:
    lines.append("No GPU speed table was found, so there is nothing to compare.")
  if sweep_rows:
    first = sweep_rows[0]
    lines += ["", f"## Sensitivity: {first['model']} at {first['pattern']} (one parameter at a "
              "time, the rest at their defaults)", "",
              "| parameter | value | dense step ms | sparse step ms | speedup | memory-bound |",
              "|---|---|---:|---:|---:|---:|"]
    for r in sweep_rows:
      lines.append(f"| {r['axis']} | {r['value']} | {r['dense_step_ms']:.1f} | "
                   f"{r['sparse_step_ms']:.1f} | {r['speedup']:.2f}x | "
                   f"{100 * r['memory_bound_share']:.1f}% |")
    lines += ["", "Range of the speedup over each parameter's swept values, widest first:", ""]
    for axis, lo, hi in sensitivity_ranking(sweep_rows):
      lines.append(f"- {axis}: {lo:.2f}x to {hi:.2f}x")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def plot(speedup_png: str, sensitivity_png: str | None, rows: Sequence[dict],
         sweep_rows: Sequence[dict], gpu: dict[tuple[str, str], list[dict]]) -> None:
  """Grouped bars of the predicted speedups (GPU ratios as markers); one panel per sweep axis."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  models = list(dict.fromkeys(r["model"] for r in rows))
  patterns = [p for p in dict.fromkeys(r["pattern"] for r in rows) if p != DENSE]
  width = 0.8 / max(len(patterns), 1)
  fig, ax = plt.subplots(figsize=(9, 4.5))
  for i, p in enumerate(patterns):
    xs = [j + (i - (len(patterns) - 1) / 2) * width for j in range(len(models))]
    ys = [next(r["speedup"] for r in rows if r["model"] == m and r["pattern"] == p)
          for m in models]
    ax.bar(xs, ys, width, label=f"SAT model {p}")
    for x, m in zip(xs, models):
      for g in gpu.get((m, p), []):
        ax.plot(x, g["ratio"], "k_" if g["implementation"] == "pallas" else "kx", ms=8)
  if gpu:
    ax.plot([], [], "k_", label="GPU measured, pallas")
    ax.plot([], [], "kx", label="GPU measured, xla")
  ax.axhline(PAPER_SPEEDUP_2_8, color="r", ls="--", lw=1, label="paper 2:8 average (1.75x)")
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.set_xticks(range(len(models)), models)
  ax.set_ylabel("speedup over dense training")
  ax.set_title("Predicted SAT speedup (bdwp, config batch) vs measured GPU ratio")
  top = max(r["speedup"] for r in rows)
  ax.set_ylim(0, top * 1.3)
  ax.legend(fontsize=8, ncol=4, loc="upper center")
  fig.tight_layout()
  fig.savefig(speedup_png, dpi=120)
  plt.close(fig)
  if not sensitivity_png or not sweep_rows:
    return
  axes_names = list(dict.fromkeys(r["axis"] for r in sweep_rows))
  ncols = 3
  nrows = math.ceil(len(axes_names) / ncols)
  fig, axs = plt.subplots(nrows, ncols, figsize=(11, 3 * nrows), squeeze=False)
  for ax, name in zip(axs.flat, axes_names):
    pts = [r for r in sweep_rows if r["axis"] == name]
    ax.plot(range(len(pts)), [r["speedup"] for r in pts], "o-")
    ax.set_xticks(range(len(pts)), [str(r["value"]) for r in pts], fontsize=7)
    ax.axhline(PAPER_SPEEDUP_2_8, color="r", ls="--", lw=1)
    ax.set_title(name, fontsize=9)
    ax.set_ylabel("speedup", fontsize=8)
  for ax in list(axs.flat)[len(axes_names):]:
    ax.axis("off")
  first = sweep_rows[0]
  fig.suptitle(f"SAT model sensitivity: {first['model']} {first['pattern']} "
               "(red: paper 2:8 average)")
  fig.tight_layout()
  fig.savefig(sensitivity_png, dpi=110)
  plt.close(fig)


def pattern_list(text: Sequence[str]) -> tuple[str, ...]:
  """Validated pattern strings (``NMPattern.parse`` is the parser)."""
  return tuple(str(NMPattern.parse(p)) for p in text)
