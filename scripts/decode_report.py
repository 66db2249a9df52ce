"""Markdown tables of issue 10's benchmark (``scripts/bench_decode.py`` JSON) for the README.

    PYTHONPATH=. python scripts/decode_report.py \
        --json benchmarks/h200_decode/grid_call5_19f2b24.json \
        --profile benchmarks/h200_decode/profile_sweep_call4_ece83ab.json \
        --out benchmarks/h200_decode.md --rows benchmarks/h200_decode.json

``--rows`` also writes the measured rows in SPEC §3's kernel-benchmark form (one row per kernel:
``op``, ``shape``, ``pattern``, ``batch``, ``implementation``, ``device``, ``dense_ms``, ``ms``,
``ratio``; the model rows with ``op = model_forward``).

``auto`` applies the card's rule (``nmsparse/ops/cards.py``, ``prefers_native_decode``) to each
measured row: where it takes the native kernel its time is the kernel's, elsewhere the product is
dense ``jnp.dot`` itself.
"""

from __future__ import annotations

import argparse
import json

from nmsparse.ops.cards import CARDS, prefers_native_decode

TARGET = {"2:8": 2.5, "2:4": 1.6}


def _us(ms) -> str:
  return "-" if ms is None else f"{ms * 1e3:.1f}"


def report(data: dict, profile: dict | None) -> str:
  rule = CARDS.get(data["device"])
  ceil = data["ceilings"]
  lines = [
      f"# Small-batch packed forward: {data['device']}",
      "",
      f"One process (jax {data['jax_version']}, git {data['git_sha']}): copy ceiling "
      f"{ceil['copy_GBps']:.0f} GB/s, bf16 GEMM {ceil['bf16_gemm_TFLOPs']:.0f} TFLOP/s. Each op is "
      "timed by `scripts/bench_kernels.time_op` over 8 rotated input sets (weights not "
      "L2-resident for K, O >= 4096), wall time per op including its host dispatch; `ratio` = "
      "dense / kernel. `fma` is `value_serial.vs_matmul` (CUDA cores, packed operand as "
      "exported), `tiled` `value_serial.tiled_matmul` (tensor cores, `prepare`-d operand; timed "
      "at 4096^2 and 8192^2 only). `GB/s` counts the best kernel's operand bytes. `auto` is the "
      "card rule applied to the row. Regenerate: `python scripts/decode_report.py` (command in "
      "its docstring; rows in SPEC form: `benchmarks/h200_decode.json`); measure: "
      "`DECODE=kernel,models bash scripts/gpu_sptc.sh` on the GPU.",
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
  lines += ["", "## The whole grid", "",
            "| K x O | pattern | batch | dense us | fma us | tiled us | ratio | GB/s | auto | "
            "auto ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
  for r in data["kernel"]:
    native = rule is not None and prefers_native_decode(r["K"], r["O"], r["pattern"], r["batch"],
                                                        rule)
    auto_ratio = r["fma_ratio"] if native else 1.0
    lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {_us(r['dense_ms'])} | "
                 f"{_us(r['fma_ms'])} | {_us(r.get('tiled_ms'))} | {r['ratio']:.2f} | "
                 f"{r['packed_GBps']:.0f} | {'native' if native else 'dense'} | "
                 f"{auto_ratio:.2f} |")
  if data.get("models"):
    lines += ["", "## Whole-model forward (2:8, exported; random weights)", "",
              "`dense`: every sparse kernel materialized dense (`materialize(..., 'dense')`); "
              "`auto`: `materialize(..., rows)` (the card rule per layer); `native`: every dense "
              "layer forced to `vs_matmul`. Rows per product = batch x tokens.", "",
              "| config | batch | rows | dense ms | auto ms | auto ratio | native ms | native ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["models"]:
      lines.append(f"| {r['config']} | {r['batch']} | {r['rows']} | {r['dense_ms']:.3f} | "
                   f"{r['ms']:.3f} | {r['ratio']:.2f} | {r['native_ms']:.3f} | "
                   f"{r['native_ratio']:.2f} |")
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
      tag = {"tiled": "vs_tiled", "tiled_nocb": "vs_tiled", "fma": "vs_fwd",
             "dense": "gemm"}[r["variant"]]
      names = [f"{v['mean_us']:.1f}" for n, v in ks.items() if tag in n]
      lines.append(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {r['variant']} | "
                   f"{r['wall_us']:.1f} | {', '.join(names) or '-'} |")
  return "\n".join(lines) + "\n"


def spec_rows(data: dict) -> list[dict]:
  """The raw benchmark JSON as SPEC §3 kernel-benchmark rows (nothing recomputed but ratios)."""
  rows = []
  rule = CARDS.get(data["device"])
  common = {"device": data["device"], "jax_version": data["jax_version"],
            "git_sha": data["git_sha"], "copy_GBps": data["ceilings"]["copy_GBps"]}
  for r in data["kernel"]:
    auto = ("native" if rule is not None and
            prefers_native_decode(r["K"], r["O"], r["pattern"], r["batch"], rule) else "dense")
    for impl, key in (("native", "fma"), ("tiled", "tiled")):
      if r.get(f"{key}_ms") is None:
        continue
      nbytes = r["packed_bytes"] if impl == "native" else r["tiled_bytes"]
      ms = r[f"{key}_ms"]
      rows.append({**common, "op": "fwd_packed", "shape": f"{r['K']}x{r['O']}", "K": r["K"],
                   "O": r["O"], "pattern": r["pattern"], "batch": r["batch"],
                   "implementation": impl, "dense_ms": r["dense_ms"], "ms": ms,
                   "ratio": r["dense_ms"] / ms, "operand_bytes": nbytes,
                   "GBps": nbytes / (ms * 1e-3) / 1e9, "rel_err": r[f"{key}_rel_err"],
                   "auto_path": auto})
  for r in data.get("models", []):
    rows.append({**common, "op": "model_forward", "shape": r["config"], "pattern": r["pattern"],
                 "batch": r["batch"], "rows": r["rows"], "implementation": "native",
                 "dense_ms": r["dense_ms"], "ms": r["native_ms"], "ratio": r["native_ratio"],
                 "auto_ms": r["ms"], "auto_ratio": r["ratio"], "auto_paths": r["paths"],
                 "rel_err": r["native_rel_err"]})
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--json", default="benchmarks/h200_decode/grid_call5_19f2b24.json")
  ap.add_argument("--rows", default="benchmarks/h200_decode.json")
  ap.add_argument("--profile", default="benchmarks/h200_decode/profile_sweep_call4_ece83ab.json")
  ap.add_argument("--out", default="benchmarks/h200_decode.md")
  args = ap.parse_args()
  with open(args.json) as f:
    data = json.load(f)
  profile = None
  if args.profile:
    with open(args.profile) as f:
      profile = json.load(f)
  text = report(data, profile)
  with open(args.out, "w") as f:
    f.write(text)
  if args.rows:
    with open(args.rows, "w") as f:
      json.dump(spec_rows(data), f, indent=1)
  print(text)


if __name__ == "__main__":
  main()
