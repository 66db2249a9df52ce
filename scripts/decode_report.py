"""Markdown tables of issue 10's benchmark (``scripts/bench_decode.py`` JSON) for the README.

    PYTHONPATH=. python scripts/decode_report.py \
        --json benchmarks/h200_decode/grid_pipe_4914cb7.json \
        --out benchmarks/h200_decode.md --rows benchmarks/h200_decode.json

``--rows`` also writes the measured rows in SPEC §3's kernel-benchmark form (one row per kernel:
``op``, ``shape``, ``pattern``, ``batch``, ``implementation``, ``device``, ``dense_ms``, ``ms``,
``ratio``; the model rows with ``op = model_forward``).

``auto`` applies the card's rule (``nmsparse/ops/cards.py``, ``decode_choice``) to each measured
row: where it takes a native kernel its time is that kernel's, elsewhere the product is dense
``jnp.dot`` itself.
"""

from __future__ import annotations

import argparse
import json
import re

from nmsparse.ops.cards import CARDS, decode_choice

TARGET = {"2:8": 2.5, "2:4": 1.6}


def _us(ms) -> str:
  return "-" if ms is None else f"{ms * 1e3:.1f}"


def _auto(r: dict, rule) -> str:
  return "dense" if rule is None else decode_choice(r["K"], r["O"], r["pattern"], r["batch"], rule)


def report(data: dict, profile: dict | None) -> str:
  rule = CARDS.get(data["device"])
  ceil = data["ceilings"]
  lines = [
      f"# Small-batch packed forward: {data['device']}",
      "",
      f"One process (jax {data['jax_version']}, git {data['git_sha']}): copy ceiling "
      f"{ceil['copy_GBps']:.0f} GB/s, bf16 GEMM {ceil['bf16_gemm_TFLOPs']:.0f} TFLOP/s. Each op is "
      "timed by `scripts/bench_decode.time_stacked`: 8 rotated weight copies (not L2-resident "
      "for K, O >= 4096) in one jit whose 8 results are stacked, so each product writes an "
      "intermediate as a model's layer does; wall time per op, host dispatch included; `ratio` "
      "= dense / kernel. `fma` is `value_serial.vs_matmul` (CUDA cores, packed operand as "
      "exported), `pipe` `value_serial.tiled_matmul` (the pipelined tensor-core kernel on the "
      "`prepare`-d operand; batch <= 16). `GB/s` counts the best kernel's operand bytes. `auto` "
      "is the card rule (`nmsparse/ops/cards.py`) applied to the row. Regenerate: "
      "`python scripts/decode_report.py` (command in its docstring; rows in SPEC form: "
      "`benchmarks/h200_decode.json`); measure: `DECODE=kernel,models bash scripts/gpu_sptc.sh` "
      "on the GPU with `.whl` carried." + (f" {data['note']}." if data.get("note") else ""),
      "",
      "## Targets (K, O >= 4096, batch <= 16)",
      "",
      "| K x O | pattern | batch | dense us | best us | kernel | ratio | target | of copy |",
      "|---|---|---:|---:|---:|---|---:|---:|---:|",
  ]
  for r in data["kernel"]:
    if r["K"] >= 4096 and r["O"] >= 4096 and r["batch"] <= 16 and r["pattern"] in TARGET:
      lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {_us(r['dense_ms'])} | "
                   f"{_us(r['ms'])} | {r['kernel']} | {r['ratio']:.2f} | "
                   f"{TARGET[r['pattern']]:.1f} | {r['fraction_of_copy']:.2f} |")
  sptc = any("sptc_ms" in r for r in data["kernel"])
  lines += ["", "## The whole grid", "",
            "| K x O | pattern | batch | dense us | fma us | pipe us | " +
            ("sptc us | " if sptc else "") + "ratio | GB/s | auto | auto ratio |",
            "|---|---|---:|---:|---:|---:|" + ("---:|" if sptc else "") + "---:|---:|---|---:|"]
  for r in data["kernel"]:
    auto = _auto(r, rule)
    auto_ratio = {"native": r["fma_ratio"], "tiled": r.get("pipe_ratio"), "dense": 1.0}[auto]
    lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {_us(r['dense_ms'])} | "
                 f"{_us(r['fma_ms'])} | {_us(r.get('pipe_ms'))} | " +
                 (f"{_us(r.get('sptc_ms'))} | " if sptc else "") +
                 f"{r['ratio']:.2f} | {r['packed_GBps']:.0f} | {auto} | {auto_ratio:.2f} |")
  if data.get("models"):
    sptc = any("sparse_tc_ms" in r for r in data["models"])
    redrawn = all(r.get("weights") == "redrawn" for r in data["models"])
    lines += ["", "## Whole-model forward (2:8, exported; random weights)", "",
              "`dense`: every sparse kernel materialized dense (`materialize(..., 'dense')`); "
              "`auto`: `materialize(..., rows)` (the card rule per layer); `native`: every dense "
              "layer forced to `vs_matmul`" + ("; `sparse_tc`: every dense layer forced onto the "
              "2:4 sparse tensor cores (cuSPARSELt)" if sptc else "") + ". Rows per product = "
              "batch x tokens." + ("" if redrawn else " This run's outputs were all zero (the "
              "ViT head is zero-initialised and `bench_decode` did not yet redraw the weights), "
              "so its `rel_err` compared zeros: the times stand, the errors say nothing."), "",
              "| config | batch | rows | dense ms | auto ms | auto ratio | native ms | native ratio |"
              + (" sparse_tc ms | sparse_tc ratio |" if sptc else ""),
              "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if sptc else "")]
    for r in data["models"]:
      lines.append(f"| {r['config']} | {r['batch']} | {r['rows']} | {r['dense_ms']:.3f} | "
                   f"{r['ms']:.3f} | {r['ratio']:.2f} | {r['native_ms']:.3f} | "
                   f"{r['native_ratio']:.2f} |" + (
                       f" {r['sparse_tc_ms']:.3f} | {r['sparse_tc_ratio']:.2f} |" if sptc else ""))
  if profile and profile.get("profile"):
    lines += ["", f"## Device time vs wall time (git {profile['git_sha']})", "",
              "Kernel durations from a profiler trace next to the wall time per op of the same "
              "op in a sequence of 8 (`wall`): the gap is host dispatch and launch.", "",
              "| K x O | pattern | batch | variant | wall us | kernels (us each) |",
              "|---|---|---:|---|---:|---|"]
    kernels = {}
    for r in profile["profile"]:
      if "kernels" in r:
        kernels[(r["K"], r["O"], r["pattern"], r["batch"])] = r["kernels"]
    for r in profile["profile"]:
      if "variant" not in r:
        continue
      ks = kernels.get((r["K"], r["O"], r["pattern"], r["batch"]), {})
      tag = {"tiled": "vs_tiled", "tiled_nocb": "vs_tiled", "pipe": "vs_pipe",
             "regs_nocb": "vs_tiled", "fma": "vs_fwd", "dense": "gemm"}[r["variant"]]
      names = [f"{v['mean_us']:.1f}" for n, v in ks.items() if tag in n]
      lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {r['variant']} | "
                   f"{r['wall_us']:.1f} | {', '.join(names) or '-'} |")
  return "\n".join(lines) + "\n"


def diag_report(diags: list[dict]) -> str:
  """The diagnostics of ``scripts/decode_diag.py``: returned vs stacked outputs, the probes."""
  lines = []
  for d in diags:
    flags = f", XLA_FLAGS `{d['xla_flags']}`" if d.get("xla_flags") else ""
    if d.get("time"):
      lines += ["", f"## Returned vs stacked outputs ({d['device']}, git {d['git_sha']}{flags})",
                "", "us per op; `regs` is the register-buffered tensor-core kernel, `pipe` the "
                "pipelined one of that commit.", "",
                "| K x O | pattern | batch | variant | returned | stacked |",
                "|---|---|---:|---|---:|---:|"]
      lines += [f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {r['variant']} | "
                f"{r['return_us']:.1f} | {r['stack_us']:.1f} |" for r in d["time"]]
    if d.get("probe"):
      lines += ["", f"## Pipelined kernel probes ({d['device']}, git {d['git_sha']})", "",
                "us per op (stacked); probe 1 leaves the MMA out, probe 2 the decode too (loads "
                "and the reduction remain). `pipe` fills its ring with 16-byte `cp.async`, "
                "`bulk` with bulk copies (`cp.async.bulk`, an mbarrier per stage).", "",
                "| K x O | batch | kernel | splits | full | no MMA | loads only |",
                "|---|---:|---|---:|---:|---:|---:|"]
      by = {}
      for r in d["probe"]:
        key = (r["K"], r["O"], r["batch"], r.get("kernel", "pipe"), r["splits"])
        by.setdefault(key, {})[r["probe"]] = r["stack_us"]
      lines += [f"| {k}x{o} | {b} | {kn} | {sp} | {v[0]:.1f} | {v[1]:.1f} | {v[2]:.1f} |"
                for (k, o, b, kn, sp), v in by.items()]
  return "\n".join(lines) + "\n" if lines else ""


KERNEL_NOTES = {
    "blocked": "`blocked`: the CUDA-core kernel on the `block_columns` layout (each block's 64 "
               "columns contiguous per slot; what `materialize(..., 'native')` serves)",
    "pipe": "`pipe`: the tensor-core ring filled by 16-byte `cp.async` from every lane",
    "bulk": "`bulk`: by one `cp.async.bulk` per contiguous chunk (values and position words of "
            "each mma tile, each x row), an mbarrier per stage",
    "sptc": "`sptc`: cuSPARSELt's product on the 2:4-structured operand "
            "(`inference.sparse_tc_matmul`)",
}


def compare_report(data: dict) -> str:
  """A kernel grid that timed several kernels (``blocked``, ``--tiled_kernels``, ``sptc``) side
  by side."""
  names = [n for n in KERNEL_NOTES if any(f"{n}_ms" in r for r in data["kernel"])]
  ceil = data.get("ceilings", {}).get("copy_GBps")
  lines = ["", f"## Kernels side by side ({data['device']}, git {data['git_sha']})",
           "", "One process" + (f" (copy ceiling {ceil:.0f} GB/s)" if ceil else "") +
           "; us per op (stacked), ratio = dense / kernel; `fma`: the CUDA-core kernel on the row "
           "layout; " + "; ".join(KERNEL_NOTES[n] for n in names) + ". Raw rows: "
           "`benchmarks/h200_decode/" + data.get("file", "") + "`.", "",
           "| K x O | pattern | batch | dense us | fma us | " +
           " | ".join(f"{n} us" for n in names) + " | best | ratio | of copy |",
           "|---|---|---:|---:|---:|" + "---:|" * len(names) + "---|---:|---:|"]
  # A dense time over 1.3x the median of its shape's dense times (every pattern and batch of
  # the grid: the same bytes) is marked: its ratio says more about dense's noise than the kernel.
  dense_of = {}
  for r in data["kernel"]:
    dense_of.setdefault((r["K"], r["O"]), []).append(r["dense_ms"])
  median = {shape: sorted(v)[len(v) // 2] for shape, v in dense_of.items()}
  outliers = 0
  for r in data["kernel"]:
    if not any(f"{n}_ms" in r for n in names):
      continue
    mark = " †" if r["dense_ms"] > 1.3 * median[(r["K"], r["O"])] else ""
    outliers += bool(mark)
    lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {_us(r['dense_ms'])}{mark} | "
                 f"{_us(r['fma_ms'])} | " + " | ".join(_us(r.get(f"{n}_ms")) for n in names) +
                 f" | {r['kernel']} | {r['ratio']:.2f} | {r['fraction_of_copy']:.2f} |")
  if outliers:
    lines += ["", f"†: dense ran over 1.3x the median dense time of its shape in this grid "
              f"({outliers} rows); read those ratios as dense's noise, not as the kernel's gain."]
  return "\n".join(lines) + "\n"


def unroll_report(diags: list[dict]) -> str:
  """``decode_diag.py --sections unroll``: the CUDA-core kernel's default against its best unroll
  and split count, and the blocked layout's default and best split count, per product."""
  lines = []
  for d in diags:
    rows = d.get("unroll") or []
    if not rows:
      continue
    by = {}
    for r in rows:
      by.setdefault((r["K"], r["O"], r["pattern"], r["batch"]), []).append(r)
    blocked = any(r["kernel"] == "blocked" for r in rows)
    lines += ["", f"## CUDA-core kernel: unroll and split sweep ({d['device']}, git "
              f"{d['git_sha']})", "", "us per op (stacked); `default`: unroll 4 at "
              "`splits_for`'s count; `best`: the fastest of unroll 4, 8, 16 (where built) x "
              "splits {default, 4, 8, 16}" + ("; `blocked`: the blocked layout at the same split "
              "counts" if blocked else "") + ". Ratio = dense / best.", "",
              "| K x O | pattern | batch | dense us | default us | best us | unroll, splits |" +
              (" blocked default us | blocked best us | splits |" if blocked else "") +
              " best ratio |",
              "|---|---|---:|---:|---:|---:|---|" + ("---:|---:|---:|" if blocked else "") +
              "---:|"]
    for (k, o, pattern, batch), rs in by.items():
      fma = [r for r in rs if r["kernel"] == "fma"]
      default = next(r for r in fma if r["unroll"] == 4 and r["splits"] == r["default_splits"])
      best = min(fma, key=lambda r: r["stack_us"])
      line = (f"| {k}x{o} | {pattern} | {batch} | {default['dense_us']:.1f} | "
              f"{default['stack_us']:.1f} | {best['stack_us']:.1f} | {best['unroll']}, "
              f"{best['splits']} |")
      top = best["stack_us"]
      if blocked:
        bl = [r for r in rs if r["kernel"] == "blocked"]
        bdef = next(r for r in bl if r["splits"] == r["default_splits"])
        bbest = min(bl, key=lambda r: r["stack_us"])
        line += f" {bdef['stack_us']:.1f} | {bbest['stack_us']:.1f} | {bbest['splits']} |"
        top = min(top, bbest["stack_us"])
      lines.append(line + f" {default['dense_us'] / top:.2f} |")
  return "\n".join(lines) + "\n" if lines else ""


MODEL_LINE = re.compile(r"^(\S+) b(\d+) \((\d+) rows\): dense ([\d.]+) ms, exported ([\d.]+) ms "
                        r"\(([\d.]+)x\), native ([\d.]+) ms \(([\d.]+)x\), sparse_tc ([\d.]+) ms "
                        r"\(([\d.]+)x\)")


def models_log_report(path: str) -> str:
  """Model rows printed by ``bench_decode --sections models`` whose run was cut off before its
  JSON was written (the log's lines, parsed)."""
  rows = []
  with open(path) as f:
    for line in f:
      m = MODEL_LINE.match(line)
      if m:
        rows.append(m.groups())
  if not rows:
    return ""
  lines = ["", f"## Whole-model forward, printed rows (`{path}`)", "",
           "2:8, random weights redrawn; the run was cut off before the CIFAR ViT and before its "
           "JSON was written, so these rows come from its log. `native`: every dense layer "
           "forced to the blocked CUDA-core kernel; `sparse_tc`: every dense layer forced onto "
           "cuSPARSELt.", "",
           "| config | batch | rows | dense ms | auto ms | auto ratio | native ms | native ratio "
           "| sparse_tc ms | sparse_tc ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  lines += ["| " + " | ".join(g) + " |" for g in rows]
  return "\n".join(lines) + "\n"


def spec_rows(data: dict) -> list[dict]:
  """The raw benchmark JSON as SPEC §3 kernel-benchmark rows (nothing recomputed but ratios)."""
  rows = []
  rule = CARDS.get(data["device"])
  common = {"device": data["device"], "jax_version": data["jax_version"],
            "git_sha": data["git_sha"], "copy_GBps": data["ceilings"]["copy_GBps"]}
  for r in data["kernel"]:
    auto = _auto(r, rule)
    for impl, key in (("native", "fma"), ("tiled", "pipe"), ("sparse_tc", "sptc")):
      if r.get(f"{key}_ms") is None:
        continue
      nbytes = r["packed_bytes"] if impl == "native" else r[f"{key}_bytes"]
      ms = r[f"{key}_ms"]
      rows.append({**common, "op": "fwd_packed", "shape": f"{r['K']}x{r['O']}", "K": r["K"],
                   "O": r["O"], "pattern": r["pattern"], "batch": r["batch"],
                   "implementation": impl, "dense_ms": r["dense_ms"], "ms": ms,
                   "ratio": r["dense_ms"] / ms, "operand_bytes": nbytes,
                   "GBps": nbytes / (ms * 1e-3) / 1e9, "rel_err": r[f"{key}_rel_err"],
                   "auto_path": auto})
  for r in data.get("models", []):
    meaningful = r.get("weights") == "redrawn"  # earlier runs' outputs were zero (report text)
    for impl, key in (("native", "native"), ("sparse_tc", "sparse_tc")):
      if f"{key}_ms" not in r:
        continue
      rows.append({**common, "op": "model_forward", "shape": r["config"],
                   "pattern": r["pattern"], "batch": r["batch"], "rows": r["rows"],
                   "implementation": impl, "dense_ms": r["dense_ms"], "ms": r[f"{key}_ms"],
                   "ratio": r[f"{key}_ratio"], "auto_ms": r["ms"], "auto_ratio": r["ratio"],
                   "auto_paths": r["paths"],
                   "rel_err": r[f"{key}_rel_err"] if meaningful else None})
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--json", default="benchmarks/h200_decode/grid_pipe_4914cb7.json")
  ap.add_argument("--rows", default="benchmarks/h200_decode.json")
  ap.add_argument("--profile", default=None,
                  help="a profile JSON (bench_decode --sections profile) for its table")
  ap.add_argument("--diag", nargs="*", default=[
      "benchmarks/h200_decode/diag_call1_0a4abef.json",
      "benchmarks/h200_decode/diag_call1_0a4abef_no_command_buffer.json",
      "benchmarks/h200_decode/diag_call3_a8783f9.json",
      "benchmarks/h200_decode/diag_call1_6e58ba0.json"],
                  help="scripts/decode_diag.py outputs whose time and probe sections are added")
  ap.add_argument("--compare", nargs="*", default=[
      "benchmarks/h200_decode/grid_blocked_710a55f.json",
      "benchmarks/h200_decode/grid_bulk_7fb2982.json"],
                  help="bench_decode kernel grids with several kernels, tabled side by side")
  ap.add_argument("--unroll", nargs="*", default=[
      "benchmarks/h200_decode/unroll_call1_48013d5.json",
      "benchmarks/h200_decode/unroll_call2_8a85b7a.json"],
                  help="decode_diag.py --sections unroll outputs")
  ap.add_argument("--models_log", nargs="*", default=["benchmarks/h200_decode/models_710a55f.log"],
                  help="bench_decode model logs of runs cut off before their JSON")
  ap.add_argument("--out", default="benchmarks/h200_decode.md")
  args = ap.parse_args()
  with open(args.json) as f:
    data = json.load(f)
  profile = None
  if args.profile:
    with open(args.profile) as f:
      profile = json.load(f)
  diags = []
  for path in args.diag or []:
    with open(path) as f:
      diags.append(json.load(f))
  text = report(data, profile)
  for path in args.compare or []:
    with open(path) as f:
      text += compare_report({**json.load(f), "file": path.rsplit("/", 1)[-1]})
  unrolls = []
  for path in args.unroll or []:
    with open(path) as f:
      unrolls.append(json.load(f))
  text += unroll_report(unrolls)
  for path in args.models_log or []:
    text += models_log_report(path)
  text += diag_report(diags)
  with open(args.out, "w") as f:
    f.write(text)
  if args.rows:
    with open(args.rows, "w") as f:
      json.dump(spec_rows(data), f, indent=1)
  print(text)


if __name__ == "__main__":
  main()
