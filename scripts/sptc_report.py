"""Tables of the sparse_tc measurements: the GEMM benchmark and the train-step comparisons.

  python scripts/sptc_report.py   # rewrites benchmarks/h200_sptc.{json,md}, results/speed_sptc.*

Inputs: ``benchmarks/h200_sptc/gemm.json`` (``scripts/bench_sptc.py --sections gemm``, one
process) and the step-time runs of ``scripts/gpu_sptc.sh`` under ``results/speed_sptc/`` (the
``*_output.txt`` transcripts of a call, whose rows share one process per row and one machine).
"""

from __future__ import annotations

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEMM = os.path.join(ROOT, "benchmarks", "h200_sptc", "gemm.json")
STEPS = os.path.join(ROOT, "results", "speed_sptc")
DEVICE = "NVIDIA H200"


def kernel_rows(gemm: list[dict]) -> list[dict]:
  """SPEC §3 kernel-benchmark rows: each product alone, with half the compression charged to it
  (one pass writes both operands), and the compression alone."""
  rows = []
  for r in gemm:
    base = dict(shape=f"{r['shape']} {r['tokens']}x{r['K']}x{r['O']}", pattern=r["pattern"],
                batch=r["tokens"], implementation="sparse_tc", device=r["device"],
                jax_version=r["jax_version"], git_sha=r["git_sha"])
    half = r["own_compress_ms"] / 2
    rows += [
        dict(base, op="ff", dense_ms=r["dense_ff_ms"], ms=r["spmm_ff_ms"]),
        dict(base, op="bp", dense_ms=r["dense_bp_ms"], ms=r["spmm_bp_ms"]),
        dict(base, op="ff+compress/2", dense_ms=r["dense_ff_ms"], ms=r["spmm_ff_ms"] + half),
        dict(base, op="bp+compress/2", dense_ms=r["dense_bp_ms"], ms=r["spmm_bp_ms"] + half),
        dict(base, op="ff+bp+compress", dense_ms=r["dense_ff_ms"] + r["dense_bp_ms"],
             ms=r["spmm_ff_ms"] + r["spmm_bp_ms"] + r["own_compress_ms"]),
        dict(base, op="compress", dense_ms=r["dense_ff_ms"], ms=r["own_compress_ms"]),
        dict(base, op="library compress (both)", dense_ms=r["dense_ff_ms"],
             ms=r["lib_compress_ms"]),
    ]
  for row in rows:
    row["ratio"] = row["dense_ms"] / row["ms"]
  return rows


def gemm_markdown(gemm: list[dict]) -> str:
  lines = [
      f"# sparse_tc GEMMs on an {DEVICE} (bf16, fp32 accumulate; one process, git "
      f"{gemm[0]['git_sha']}, jax {gemm[0]['jax_version']}, cuSPARSELt 0.8.0)", "",
      "`x [tokens, K] @ W [K, O]`: forward `ff` = `x @ W_ff` (sparse operand `(W*M_ff)^T`), "
      "backward-data `bp` = `dy @ W_bp^T` (sparse operand `W*M_bp`). Dense = `jnp.dot` (cuBLAS) "
      "on the bf16 weight. `compress` = our one pass from the fp32 weight to both compressed "
      "operands and the keep bits; `incl.` charges half of it to each product. Library compress "
      "= `cusparseLtSpMMACompress2` on both operands. Reproduce: `scripts/gpu_sptc.sh` with "
      "`SECTIONS=check,gemm`, then `python scripts/sptc_report.py`.", "",
      "| shape | tokens x K x O | N:M | dense ff / bp ms | spmm ff / bp ms | kernel ratio ff / bp "
      "| compress ms (% of dense ff) | incl. ratio ff / bp | library compress ms |",
      "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in gemm:
    lines.append(
        f"| {r['shape']} | {r['tokens']}x{r['K']}x{r['O']} | {r['pattern']} | "
        f"{r['dense_ff_ms']:.3f} / {r['dense_bp_ms']:.3f} | {r['spmm_ff_ms']:.3f} / "
        f"{r['spmm_bp_ms']:.3f} | {r['ratio_ff_kernel']:.2f} / {r['ratio_bp_kernel']:.2f} | "
        f"{r['own_compress_ms']:.3f} ({100 * r['compress_share_of_gemm']:.1f}%) | "
        f"**{r['ratio_ff_included']:.2f} / {r['ratio_bp_included']:.2f}** | "
        f"{r['lib_compress_ms']:.3f} |")
  return "\n".join(lines) + "\n"


_ROW = re.compile(r"^\s+\d+\s+(\d+)\s+([\d.]+)\s+([\d.]+)")


def transcript_rows(path: str) -> list[dict]:
  """(label, batch, synced ms, pipelined ms) from a ``*_output.txt`` transcript."""
  rows, label = [], None
  for line in open(path):
    if line.startswith("#") or not line.strip():
      continue
    m = _ROW.match(line)
    if m and label is not None:
      rows.append(dict(label=label, batch=int(m.group(1)), synced=float(m.group(2)),
                       pipelined=float(m.group(3))))
      label = None
    else:
      label = line.strip()
  return rows


def parse_label(label: str) -> dict:
  """``config/method/attention/implementation/pattern/extra`` (call 4's RUNS syntax)."""
  cfg, method, _, impl, pattern = (label.split("/") + [""] * 5)[:5]
  model = {"vit_b16_imagenet224": "vit_b16_224", "resnet50_imagenet224": "resnet50_224",
           "vit_cifar10": "vit_cifar10", "resnet50_cifar10": "resnet50_cifar10"}[cfg.split(":")[0]]
  return dict(model=model, method=method, implementation=impl or "auto", pattern=pattern or None)


def speed_rows() -> list[dict]:
  """SPEC §3 speed rows, each sparse run against the dense (or pallas) run of the same call."""
  out = []
  call4 = [dict(r, **parse_label(r["label"]))
           for r in transcript_rows(os.path.join(STEPS, "call4_step_time_output.txt"))]
  base = dict(device=DEVICE, git_sha="abd2796", jax_version="0.11.2",
              source="results/speed_sptc/call4_step_time_output.txt")
  dense = next(r for r in call4 if r["model"] == "vit_b16_224" and r["method"] == "dense")
  for r in call4:
    if r["model"] == "vit_b16_224" and r["method"] != "dense":
      out.append(dict(base, model=r["model"], method=r["method"], pattern=r["pattern"],
                      implementation=r["implementation"], batch=r["batch"], baseline="dense",
                      dense_step_ms=dense["synced"], sparse_step_ms=r["synced"],
                      ratio=dense["synced"] / r["synced"],
                      dense_pipelined_ms=dense["pipelined"], sparse_pipelined_ms=r["pipelined"],
                      pipelined_ratio=dense["pipelined"] / r["pipelined"]))
  for model in ("vit_cifar10", "resnet50_cifar10"):
    pallas = next(r for r in call4 if r["model"] == model and r["implementation"] == "pallas")
    auto = next(r for r in call4 if r["model"] == model and r["implementation"] == "auto")
    out.append(dict(base, model=model, method="bdwp", pattern="2:8", implementation="auto",
                    batch=auto["batch"], baseline="pallas", dense_step_ms=pallas["synced"],
                    sparse_step_ms=auto["synced"], ratio=pallas["synced"] / auto["synced"],
                    dense_pipelined_ms=pallas["pipelined"], sparse_pipelined_ms=auto["pipelined"],
                    pipelined_ratio=pallas["pipelined"] / auto["pipelined"]))
  d5 = json.load(open(os.path.join(STEPS, "call5_resnet50_224_dense.json")))[0]
  s5 = json.load(open(os.path.join(STEPS, "call5_resnet50_224_bdwp_2of4_sparse_tc.json")))[0]
  out.append(dict(device=DEVICE, git_sha=s5["git_sha"], jax_version=s5["jax_version"],
                  source="results/speed_sptc/call5_*.json", model="resnet50_224", method="bdwp",
                  pattern="2:4", implementation="sparse_tc", batch=s5["global_batch"],
                  baseline="dense", dense_step_ms=d5["step_ms_with_data"],
                  sparse_step_ms=s5["step_ms_with_data"],
                  ratio=d5["step_ms_with_data"] / s5["step_ms_with_data"],
                  dense_pipelined_ms=d5["pipelined_step_ms_with_data"],
                  sparse_pipelined_ms=s5["pipelined_step_ms_with_data"],
                  pipelined_ratio=(d5["pipelined_step_ms_with_data"] /
                                   s5["pipelined_step_ms_with_data"])))
  return out


def speed_markdown(rows: list[dict]) -> str:
  lines = [f"# Train-step speed with sparse_tc on an {DEVICE} (bf16, synthetic images, one GPU)",
           "", "`ratio` = baseline step ms / this step ms, both measured in the same device call "
           "(one process per row, median of 15 steps after 3 warm-ups; *synced* waits for the "
           "device after every step, *pipelined* every 10 steps). `auto` = `implementation=None` "
           "(per layer, by `nmsparse/ops/cards.py`). Rows come from `results/speed_sptc/`; "
           "`python scripts/sptc_report.py` regenerates this file.", "",
           "| model | method | N:M | implementation | batch | baseline | baseline ms | ms | ratio "
           "synced | ratio pipelined | git |", "|---|---|---|---|---:|---|---:|---:|---:|---:|---|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['method']} | {r['pattern']} | {r['implementation']} | "
                 f"{r['batch']} | {r['baseline']} | {r['dense_step_ms']:.2f} | "
                 f"{r['sparse_step_ms']:.2f} | **{r['ratio']:.3f}** | {r['pipelined_ratio']:.3f} | "
                 f"{r['git_sha']} |")
  return "\n".join(lines) + "\n"


def main():
  gemm = json.load(open(GEMM))
  with open(os.path.join(ROOT, "benchmarks", "h200_sptc.json"), "w") as f:
    json.dump(kernel_rows(gemm), f, indent=1)
  with open(os.path.join(ROOT, "benchmarks", "h200_sptc.md"), "w") as f:
    f.write(gemm_markdown(gemm))
  rows = speed_rows()
  with open(os.path.join(ROOT, "results", "speed_sptc.json"), "w") as f:
    json.dump(rows, f, indent=1)
  with open(os.path.join(ROOT, "results", "speed_sptc.md"), "w") as f:
    f.write(speed_markdown(rows))
  print(speed_markdown(rows))


if __name__ == "__main__":
  main()
