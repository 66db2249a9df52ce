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


def compare_report(data: dict) -> str:
  """A kernel grid that timed several tensor-core kernels (``--tiled_kernels``) side by side."""
  names = [n for n in ("pipe", "bulk") if any(f"{n}_ms" in r for r in data["kernel"])]
  lines = ["", f"## Tensor-core copy paths side by side ({data['device']}, git {data['git_sha']})",
           "", "One process; us per op (stacked), ratio = dense / kernel. `pipe`: the ring filled "
           "by 16-byte `cp.async` from every lane; `bulk`: by one `cp.async.bulk` per contiguous "
           "chunk (values and position words of each mma tile, each x row), an mbarrier per stage. "
           "Raw rows: `benchmarks/h200_decode/" + data.get("file", "") + "`.", "",
           "| K x O | pattern | batch | dense us | fma us | " +
           " | ".join(f"{n} us" for n in names) + " | " +
           " | ".join(f"{n} ratio" for n in names) + " |",
           "|---|---|---:|---:|---:|" + "---:|" * (2 * len(names))]
  for r in data["kernel"]:
    if not all(f"{n}_ms" in r for n in names):
      continue
    lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {_us(r['dense_ms'])} | "
                 f"{_us(r['fma_ms'])} | " + " | ".join(_us(r[f"{n}_ms"]) for n in names) + " | " +
                 " | ".join(f"{r[f'{n}_ratio']:.2f}" for n in names) + " |")
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
      "benchmarks/h200_decode/grid_bulk_7fb2982.json"],
                  help="bench_decode kernel grids with several --tiled_kernels, tabled side by side")
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
  text = report(data, profile) + diag_report(diags)
  for path in args.compare or []:
    with open(path) as f:
      text += compare_report({**json.load(f), "file": path.rsplit("/", 1)[-1]})
  with open(args.out, "w") as f:
    f.write(text)
  if args.rows:
    with open(args.rows, "w") as f:
      json.dump(spec_rows(data), f, indent=1)
  print(text)


if __name__ == "__main__":
  main()
