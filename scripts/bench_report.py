"""Merges ``bench_kernels.py`` outputs (one ``kernels.json`` per GPU process, possibly from several
device calls) into one JSON and a markdown report: the issue's three targets first, then the whole
grid as pivot tables.

    python scripts/bench_report.py --inputs 'runA/gpu*/kernels.json' 'runB/gpu*/kernels.json' \
        --out benchmarks/h200_grid

Every row keeps its own dense baseline (timed in the same process, on the same GPU); the report
never divides numbers from two processes. Each row gains ``source`` (which input it came from) and
``max_rotate`` (the rotation its process used).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os

BATCHES = (8, 16, 4096, 16384)
PATTERNS = ("2:8", "2:4", "1:8", "4:8")


def load(patterns: list[str]) -> tuple[list[dict], list[dict]]:
  rows, metas = [], []
  for pat in patterns:
    for path in sorted(glob.glob(pat)):
      with open(path) as f:
        doc = json.load(f)
      meta = {**doc["meta"], "source": path}
      metas.append(meta)
      for r in doc["rows"]:
        rows.append({**r, "source": path, "max_rotate": meta.get("max_rotate", 16)})
  return rows, metas


def _fmt(v, spec=".2f"):
  return "–" if v is None else format(v, spec)


def _index(rows):
  t = collections.defaultdict(dict)
  for r in rows:
    if r["op"] == "prune_pack":
      t[(r["shape"], r["pattern"])][("prune", r["variant"], r["batch"])] = r
    else:
      t[(r["shape"], r["pattern"])][(r["op"], r["implementation"], r["batch"])] = r
  return t


def _shape_order(rows):
  seen = []
  for r in rows:
    if r["shape"] not in seen:
      seen.append(r["shape"])
  dims = {r["shape"]: (r["k"], r["o"]) for r in rows}
  return sorted(seen, key=lambda s: (dims[s][0] * dims[s][1], s)), dims


def report(rows: list[dict], metas: list[dict]) -> str:
  t = _index(rows)
  shapes, dims = _shape_order(rows)
  devices = sorted({m["device"] for m in metas})
  shas = sorted({m["git_sha"][:10] for m in metas})
  lines = [f"# Kernel grid: {', '.join(devices)}", "",
           f"{len(rows)} rows from {len(metas)} processes (one per GPU; jax "
           f"{', '.join(sorted({m['jax_version'] for m in metas}))}; git {', '.join(shas)}). "
           "Each row's dense baseline was timed in the same process on the same GPU; "
           "`ratio = dense_ms / ms` (> 1: faster than dense). Per process ceilings:", ""]
  lines += ["| source | max_rotate | copy GB/s | bf16 GEMM TFLOP/s | not run |", "|---|---|---|---|---|"]
  for m in metas:
    c = m["ceilings"]
    lines.append(f"| `{m['source']}` | {m.get('max_rotate', 16)} | {c['copy_GBps']:.0f} | "
                 f"{c['bf16_gemm_TFLOPs']:.0f} | {len(m['not_run'])} |")

  def cell(key, k):
    r = t.get(key, {}).get(k)
    return None if r is None else r

  # Targets ---------------------------------------------------------------------------------------
  lines += ["", "## Targets", "",
            "**prune_pack <= 10% of one dense bf16 GEMM of the layer at batch >= 4096** "
            "(fraction of the GEMM; masked = what the large-batch path uses, packed = the "
            "small-batch path's output):", "",
            "| shape | K x O | pattern | masked @4096 | masked @16384 | packed @4096 | "
            "packed @16384 |", "|---|---|---|---|---|---|---|"]
  for s in shapes:
    for p in ("2:8", "2:4"):
      vals = [cell((s, p), ("prune", v, b)) for v in ("masked", "packed") for b in (4096, 16384)]
      if any(vals):
        lines.append(f"| {s} | {dims[s][0]}x{dims[s][1]} | {p} | " + " | ".join(
            _fmt(None if v is None else 100 * v["fraction_of_gemm"], ".1f") + "%" for v in vals)
            + " |")
  lines += ["", "**BDWP layer forward+backward, pallas, >= 1.00x dense for K, O >= 1024 at batch "
            ">= 4096, 2:4 and 2:8** (xla beside it):", "",
            "| shape | pattern | pallas @4096 | pallas @16384 | xla @4096 | xla @16384 |",
            "|---|---|---|---|---|---|"]
  for s in shapes:
    if min(dims[s]) < 1024:
      continue
    for p in ("2:8", "2:4"):
      vals = [cell((s, p), ("layer_fwd_bwd", i, b)) for i in ("pallas", "xla")
              for b in (4096, 16384)]
      lines.append(f"| {s} | {p} | " + " | ".join(_fmt(v and v["ratio"]) for v in vals) + " |")
  lines += ["", "**Packed forward at batch <= 16, >= 2.5x (2:8) / >= 1.6x (2:4) over dense "
            "`jnp.dot` at K, O >= 4096** (backward-data product beside it; GB/s of packed bytes):",
            "", "| shape | pattern | fwd @8 | fwd @16 | bwd-data @8 | bwd-data @16 | packed GB/s "
            "(fwd @16) | dense GB/s |", "|---|---|---|---|---|---|---|---|"]
  for s in shapes:
    if min(dims[s]) < 4096:
      continue
    for p in PATTERNS:
      vals = [cell((s, p), (op, "pallas", b)) for op in ("fwd_packed", "bwd_data_packed")
              for b in (8, 16)]
      f16 = vals[1]
      lines.append(f"| {s} | {p} | " + " | ".join(_fmt(v and v["ratio"]) for v in vals) +
                   f" | {_fmt(f16 and f16['packed_GBps'], '.0f')} | "
                   f"{_fmt(f16 and f16['dense_GBps'], '.0f')} |")

  # Whole grid ------------------------------------------------------------------------------------
  lines += ["", "## The whole grid", ""]
  for op, title in (("layer_fwd_bwd", "Layer forward+backward (ratio vs dense layer)"),
                    ("layer_fwd", "Layer forward (ratio vs dense layer)")):
    lines += [f"### {title}", "", "| shape | K x O | pattern | " + " | ".join(
        f"{i} @{b}" for b in BATCHES for i in ("xla", "pallas")) + " |",
              "|---|---|---|" + "---|" * (2 * len(BATCHES))]
    for s in shapes:
      for p in PATTERNS:
        vals = [cell((s, p), (op, i, b)) for b in BATCHES for i in ("xla", "pallas")]
        lines.append(f"| {s} | {dims[s][0]}x{dims[s][1]} | {p} | " + " | ".join(
            _fmt(v and v["ratio"]) for v in vals) + " |")
    lines.append("")
  lines += ["### Packed products at small batch (ratio vs dense `jnp.dot`)", "",
            "| shape | pattern | fwd @8 | fwd @16 | bwd-data @8 | bwd-data @16 |",
            "|---|---|---|---|---|---|"]
  for s in shapes:
    for p in PATTERNS:
      vals = [cell((s, p), (op, "pallas", b)) for op in ("fwd_packed", "bwd_data_packed")
              for b in (8, 16)]
      lines.append(f"| {s} | {p} | " + " | ".join(_fmt(v and v["ratio"]) for v in vals) + " |")
  lines += ["", "### prune_pack (ms, and % of one dense GEMM at 4096 / 16384)", "",
            "| shape | pattern | masked ms | masked % | packed ms | packed % |",
            "|---|---|---|---|---|---|"]
  for s in shapes:
    for p in PATTERNS:
      out = []
      for v in ("masked", "packed"):
        a, b = cell((s, p), ("prune", v, 4096)), cell((s, p), ("prune", v, 16384))
        out += [_fmt(a and a["ms"], ".4f"),
                f"{_fmt(a and 100 * a['fraction_of_gemm'], '.0f')} / "
                f"{_fmt(b and 100 * b['fraction_of_gemm'], '.0f')}"]
      lines.append(f"| {s} | {p} | " + " | ".join(out) + " |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--inputs", nargs="+", required=True, help="globs of kernels.json files")
  parser.add_argument("--out", required=True, help="output prefix: writes PREFIX.json, PREFIX.md")
  args = parser.parse_args()
  rows, metas = load(args.inputs)
  if not rows:
    raise SystemExit(f"No rows in {args.inputs}.")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump({"meta": metas, "rows": rows}, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(report(rows, metas))
  print(f"{len(rows)} rows from {len(metas)} files -> {args.out}.json, {args.out}.md")


if __name__ == "__main__":
  main()
