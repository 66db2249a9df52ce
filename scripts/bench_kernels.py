"""Kernel benchmark: dense jnp vs BDWP (xla, pallas) on the named bench shapes, one GPU/process.

    python scripts/bench_kernels.py --grid --out /tmp/b              # the issue's full grid (GPU)
    python scripts/bench_kernels.py --grid --shapes square_4096 --patterns 2:8 --out /tmp/b
    python scripts/bench_kernels.py --smoke --out /tmp/b             # checks the script on CPU

``--grid`` runs, for every named bench shape and pattern (2:8, 2:4, 1:8, 4:8), the shipped kernels
with their default blocks: packed products at batch 8 and 16, the BDWP layer (xla and pallas,
forward and forward+backward) at batch 8, 16, 4096 and 16384, and prune_pack against one GEMM of
the layer at 4096 and 16384. Dense baselines are timed once per shape and batch in the same
process. Items run in order until ``--budget_s`` is spent; the rest is listed under ``not_run``.
``--sweep`` times block configs of the packed products (4096^2 and 8192^2, batch 16) into
``block_sweep`` (after the grid with ``--grid``, alone otherwise).

Rows (SPEC §3 keys: op, shape, pattern, batch, implementation, device, dense_ms, ms, ratio =
dense_ms / ms, jax_version, git_sha; plus extras):

* ``fwd_packed`` / ``bwd_data_packed`` (batch 8, 16): ``nm_matmul(x, W_ff)`` / ``nm_matmul_t(dy,
  W_bp)`` on prepacked operands vs ``jnp.dot`` with the dense bf16 weight (the memory-bound case).
* ``layer_fwd`` / ``layer_fwd_bwd``: ``nm_dense`` forward (and ``jax.vjp`` forward + backward with a
  random cotangent) per implementation vs the dense layer ``x @ w.astype(bf16)`` from fp32 masters.
* ``prune_pack`` (packed and masked outputs) vs one dense bf16 GEMM of the layer at that batch:
  ``ratio`` = GEMM / prune, ``fraction_of_gemm`` = prune / GEMM (target <= 0.10).

Timing: jit, 3 warm-up calls, then the median over 50 samples; each sample enqueues ``calls``
back-to-back jitted calls, each running the op on ``rotate`` different input sets (so weights are
not L2-resident where they fit ``rotate`` times in 150 MB), and blocks on the last; ms = sample time
/ (calls * rotate). Ceilings (copy bandwidth, bf16 GEMM rate) are measured first. Packed-product
rows record their relative error against the jnp reference, pallas layer rows against xla.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

import nmsparse as nms
from nmsparse.kernels import (MatmulBlocks, nm_matmul, nm_matmul_t, prune_pack,
                              reference_nm_matmul, reference_nm_matmul_t)
from nmsparse.kernels.shapes import BENCH, CI, Shape, by_name
from nmsparse.pack import pack_nm, packed_bytes

BF16 = jnp.bfloat16
SAMPLES = int(os.environ.get("BENCH_SAMPLES", 50))
L2_SPAN = 150e6


def _git_sha() -> str:
  """``GIT_SHA``/``NMSPARSE_GIT_SHA`` when set (a copy of a commit run elsewhere: the enclosing
  checkout's HEAD would be the wrong commit), else this checkout's HEAD."""
  for var in ("GIT_SHA", "NMSPARSE_GIT_SHA"):
    if os.environ.get(var):
      return os.environ[var]
  try:
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True,
                                   cwd=os.path.dirname(os.path.abspath(__file__))).strip()
  except Exception:  # noqa: BLE001 - a copy without .git still benchmarks
    return "unknown"


def _block(out):
  jax.tree.map(lambda a: a.block_until_ready(), out)


def time_op(fn, make_set, bytes_per_set: float, max_rotate: int = 16) -> float:
  """Median ms of ``fn(*set)`` over at most ``max_rotate`` rotated input sets (module docstring).

  Each rotated set is one more traced (and compiled) copy of the op.
  """
  rotate = int(min(max_rotate, max(1, math.ceil(L2_SPAN / max(bytes_per_set, 1.0)))))
  sets = [make_set(i) for i in range(rotate)]
  jf = jax.jit(lambda sets: [fn(*s) for s in sets])
  for _ in range(3):
    _block(jf(sets))
  t0 = time.perf_counter()
  _block(jf(sets))
  one = time.perf_counter() - t0
  calls = int(min(20, max(1, math.ceil(2e-3 / max(one, 1e-6)))))
  samples = []
  for _ in range(SAMPLES):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = jf(sets)
    _block(out)
    samples.append((time.perf_counter() - t0) / (calls * rotate))
  return 1e3 * float(np.median(samples))


def rel_err(got, want) -> float:
  """``|got - want| / |want|``; NaN for an all-zero ``want``, where it could not fail (an
  untrained ViT's zero head made a whole model's logits zero)."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  scale = np.linalg.norm(want)
  return float(np.linalg.norm(got - want) / scale) if scale > 0 else float("nan")


def _normal(key, shape, dtype):
  return jax.random.normal(jax.random.key(key), shape, jnp.float32).astype(dtype)


def ceilings(smoke: bool = False) -> dict:
  n = (1 << 20) if smoke else 256 * 1024 * 1024  # 1 GiB of fp32: read + write = 2 GiB per copy
  a = _normal(0, (n,), jnp.float32)
  ms = time_op(lambda a: a * 1.5, lambda i: (a,), 8 * n, max_rotate=1)
  bw = 2 * 4 * n / (ms * 1e-3)
  s = 256 if smoke else 8192
  x, y = _normal(1, (s, s), BF16), _normal(2, (s, s), BF16)
  ms_mm = time_op(lambda x, y: x @ y, lambda i: (x, y), 4 * s * s, max_rotate=1)
  return {"copy_GBps": bw / 1e9, "bf16_gemm_TFLOPs": 2 * s**3 / (ms_mm * 1e-3) / 1e12}


class Bench:

  def __init__(self, args):
    self.rows, self.args = [], args
    self.device = jax.devices()[0].device_kind
    self.meta = {"device": self.device, "jax_version": jax.__version__, "git_sha": _git_sha(),
                 "max_rotate": args.max_rotate}
    self.deadline = time.time() + args.budget_s
    self.skipped = []
    self.sweeps, self.best = [], {}
    self._dense = {}  # dense baselines depend on (op, shape, batch) only: timed once per process

  def dense_ms(self, key: tuple, fn, make_set, nbytes: float) -> float:
    """``time_op`` of a dense baseline, once per ``key`` (shared by every pattern's rows)."""
    if key not in self._dense:
      self._dense[key] = time_op(fn, make_set, nbytes, self.args.max_rotate)
    return self._dense[key]

  def add(self, **row):
    row = {**row, **self.meta}
    row["ratio"] = row["dense_ms"] / row["ms"]
    self.rows.append(row)
    keys = ("op", "shape", "pattern", "batch", "implementation", "dense_ms", "ms", "ratio")
    print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                   for k in keys), flush=True)

  def out_of_time(self, what: str) -> bool:
    if time.time() > self.deadline:
      self.skipped.append(what)
      return True
    return False

  # -- small batch: packed products ----------------------------------------------------------
  # (bo, rows, splits, warps, stages); splits None = enough for ``programs`` programs (last entry)
  SWEEP = ((32, 16, 1, 4, 3, 264), (64, 16, 1, 4, 3, 264), (32, 32, 1, 4, 3, 264),
           (64, 16, 2, 4, 3, 264), (128, 16, 4, 8, 3, 132), (32, 8, 1, 4, 4, 264),
           (128, 16, None, 8, 3, 264), (128, 16, None, 8, 3, 528), (128, 8, None, 8, 4, 132),
           (128, 8, None, 4, 4, 264), (256, 16, None, 8, 3, 132), (256, 8, None, 8, 3, 264),
           (64, 8, None, 4, 4, 528), (128, 32, None, 8, 2, 132), (128, 16, None, 4, 3, 132),
           (128, 16, None, 8, 4, 132), (128, 16, None, 8, 2, 132), (64, 32, None, 4, 3, 264))

  def sweep(self, s: Shape, pattern: str, batch: int):
    """Times the block configs of the packed products; later rows use the fastest per direction."""
    k, o = s.k, s.o
    w = _normal(10, (k, o), jnp.float32)
    for op, fn, act, operand, red_axis in (
        ("fwd_packed", nm_matmul, _normal(11, (batch, k), BF16), pack_nm(w, pattern, 0, BF16), 0),
        ("bwd_data_packed", nm_matmul_t, _normal(12, (batch, o), BF16),
         pack_nm(w, pattern, 1, BF16), 1)):
      nbytes = packed_bytes((k, o), pattern, red_axis, 2)
      best = None
      for bo, rows, splits, warps, stages, programs in self.SWEEP:
        blocks = MatmulBlocks(bb=16, bo=bo, rows=rows, splits=splits, num_warps=warps,
                              num_stages=stages, programs=programs)
        f = lambda a, p, blocks=blocks, fn=fn: fn(a, p, blocks=blocks)
        copies = lambda i, a=operand: jax.tree.map(lambda t: t + jnp.zeros((), t.dtype), a)
        try:
          ms = time_op(f, lambda i: (act, copies(i)), nbytes, self.args.max_rotate)
        except ValueError as e:  # e.g. splits that do not divide this shape's reduction steps
          print(f"sweep {op} {s.name}: skip {blocks}: {e}", flush=True)
          continue
        cfg = dict(bo=bo, rows=rows, splits=splits, num_warps=warps, num_stages=stages,
                   programs=programs)
        self.sweeps.append({"op": op, "shape": s.name, "pattern": pattern, "batch": batch,
                            "ms": ms, **cfg, **self.meta})
        print(f"sweep {op} {s.name} {pattern} b={batch} {cfg}: {ms:.4f} ms", flush=True)
        if best is None or ms < best[0]:
          best = (ms, blocks)
      self.best[(op, pattern)] = best[1]

  def packed_products(self, s: Shape, pattern: str, batch: int, tuned: bool = True):
    k, o = s.k, s.o
    w = _normal(10, (k, o), jnp.float32)
    wb = w.astype(BF16)
    dense_bytes = 2 * k * o
    ff, bp = pack_nm(w, pattern, 0, BF16), pack_nm(w, pattern, 1, BF16)
    x = _normal(11, (batch, k), BF16)
    dy = _normal(12, (batch, o), BF16)
    for op, fn, ref, act, operand, red_axis in (
        ("fwd_packed", nm_matmul, reference_nm_matmul, x, ff, 0),
        ("bwd_data_packed", nm_matmul_t, reference_nm_matmul_t, dy, bp, 1)):
      sparse_bytes = packed_bytes((k, o), pattern, red_axis, 2)
      copies = lambda i, a=operand: jax.tree.map(lambda t: t + jnp.zeros((), t.dtype), a)
      acts = lambda i, a=act: a + jnp.asarray(i, a.dtype) * 0
      dense_fn = (lambda a, w: jnp.dot(a, w)) if red_axis == 0 else (lambda a, w: jnp.dot(a, w.T))
      dense_ms = self.dense_ms((op, s.name, batch), dense_fn,
                               lambda i: (acts(i), wb + jnp.zeros((), BF16)), dense_bytes)
      blocks = self.best.get((op, pattern)) if tuned and batch <= 16 else None
      run = lambda a, p, fn=fn, blocks=blocks: fn(a, p, blocks=blocks)
      ms = time_op(run, lambda i: (acts(i), copies(i)), sparse_bytes, self.args.max_rotate)
      err = rel_err(run(act, operand), ref(act, operand))
      self.add(op=op, shape=s.name, k=k, o=o, pattern=pattern, batch=batch,
               implementation="pallas", dense_ms=dense_ms, ms=ms, rel_err=err,
               dense_weight_bytes=dense_bytes, packed_weight_bytes=sparse_bytes,
               blocks=None if blocks is None else blocks.__dict__,
               dense_GBps=dense_bytes / (dense_ms * 1e-3) / 1e9,
               packed_GBps=sparse_bytes / (ms * 1e-3) / 1e9)

  # -- layer forward and forward + backward ----------------------------------------------------
  def layer(self, s: Shape, pattern: str, batch: int, impls=("xla", "pallas")):
    k, o = s.k, s.o
    w = _normal(20, (k, o), jnp.float32)
    x = _normal(21, (batch, k), BF16)
    dy = _normal(22, (batch, o), BF16)
    set_bytes = 4 * k * o + 2 * batch * (k + o)
    make = lambda i: (x + jnp.asarray(i, BF16) * 0, w + jnp.float32(i) * 0, dy)

    def fwd_bwd(layer):
      def run(x, w, dy):
        y, pull = jax.vjp(layer, x, w)
        return (y, *pull(dy))
      return run

    dense = lambda x, w: jnp.dot(x, w.astype(BF16))
    dense_fwd_ms = self.dense_ms(("layer_fwd", s.name, batch), lambda x, w, dy: dense(x, w), make,
                                 set_bytes)
    dense_fb_ms = self.dense_ms(("layer_fwd_bwd", s.name, batch), fwd_bwd(dense), make, set_bytes)
    ref = None
    for impl in impls:
      layer = lambda x, w, impl=impl: nms.nm_dense(x, w, pattern, "bdwp", implementation=impl)
      fwd_ms = time_op(lambda x, w, dy: layer(x, w), make, set_bytes, self.args.max_rotate)
      fb_ms = time_op(fwd_bwd(layer), make, set_bytes, self.args.max_rotate)
      outs = jax.jit(fwd_bwd(layer))(x, w, dy)
      ref = outs if ref is None else ref
      err = max(rel_err(a, b) for a, b in zip(outs, ref))
      common = dict(shape=s.name, k=k, o=o, pattern=pattern, batch=batch, implementation=impl,
                    **({"rel_err_vs_xla": err} if impl != impls[0] else {}))
      self.add(op="layer_fwd", dense_ms=dense_fwd_ms, ms=fwd_ms, **common)
      self.add(op="layer_fwd_bwd", dense_ms=dense_fb_ms, ms=fb_ms, **common)

  # -- the grid: one (shape, pattern) cell ---------------------------------------------
  def cell(self, s: Shape, pattern: str):
    """Every grid row of one shape and pattern, with the shipped kernels and blocks: packed
    products at batch 8 and 16, the layer (xla and pallas, fwd and fwd+bwd) at 8, 16, 4096 and
    16384, and prune_pack against one GEMM at 4096 and 16384."""
    for batch in (8, 16):
      self.packed_products(s, pattern, batch, tuned=False)
    for batch in (8, 16, 4096, 16384):
      self.layer(s, pattern, batch)
    self.prune(s, pattern)

  # -- prune_pack vs one dense GEMM --------------------------------------------------------------
  def prune(self, s: Shape, pattern: str, batches=(4096, 16384)):
    w = _normal(30, s.weight_shape, jnp.float32)
    k, o = s.k, s.o
    results = {}
    for packed in (True, False):
      fn = lambda w, packed=packed: prune_pack(w, pattern, "bdwp", dtype=BF16, packed=packed)
      results[packed] = time_op(fn, lambda i: (w + jnp.float32(i) * 0,), 4 * k * o,
                                self.args.max_rotate)
    wb = w.reshape(k, o).astype(BF16)
    for batch in batches:
      x = _normal(31, (batch, k), BF16)
      gemm_ms = self._dense.get(("gemm", s.name, batch))
      if gemm_ms is None:
        gemm_ms = self._dense[("gemm", s.name, batch)] = time_op(
            lambda x, w: x @ w, lambda i: (x, wb), 2 * batch * k, max_rotate=1)
      for packed, ms in results.items():
        self.add(op="prune_pack", variant="packed" if packed else "masked", shape=s.name, k=k,
                 o=o, pattern=pattern, batch=batch, implementation="pallas", dense_ms=gemm_ms,
                 ms=ms, fraction_of_gemm=ms / gemm_ms, read_GBps=4 * k * o / (ms * 1e-3) / 1e9)


GRID_PATTERNS = ("2:8", "2:4", "1:8", "4:8")


def plan(args) -> list[tuple]:
  """Work items in order. ``--grid``: the issue's full grid (``cell`` per shape and pattern) over
  ``--shapes``; ``--cells``: those cells. ``--sweep`` adds the block sweep of the packed products
  (4096^2 and 8192^2, batch 16) after them; it never changes grid rows, which always use the
  shipped defaults."""
  if args.smoke and not args.cells:  # CPU check of this script: CI shapes, tiny batches
    s = CI[1]
    return [("sweep", s, "2:8", 5), ("packed_products", s, "2:8", 5), ("prune", s, "2:4", (64,)),
            ("layer", s, "2:8", 5), ("packed_products", s, "2:8", 5, False)]
  shapes = [by_name(n) for n in args.shapes.split(",")] if args.shapes else list(BENCH)
  patterns = args.patterns.split(",")
  sweeps = [("sweep", by_name(s), p, 16)
            for s, p in (("square_4096", "2:8"), ("square_8192", "2:8"), ("square_8192", "2:4"))]
  if args.cells:  # explicit "shape:pattern" cells, e.g. to finish a grid that ran out of time
    cells = [c.rsplit(":", 2) for c in args.cells.split(",")]
    return ([("cell", by_name(c[0]), f"{c[1]}:{c[2]}") for c in cells]
            + (sweeps if args.sweep else []))
  if args.grid:
    return [("cell", s, p) for s in shapes for p in patterns] + (sweeps if args.sweep else [])
  if args.sweep:
    return sweeps
  raise SystemExit("Nothing to run: pass --grid, --cells, --sweep or --smoke.")


def write(bench: Bench, out: str, ceil: dict):
  os.makedirs(out, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  doc = {"meta": {**bench.meta, "date": stamp, "ceilings": ceil, "not_run": bench.skipped},
         "rows": bench.rows, "block_sweep": bench.sweeps}
  with open(os.path.join(out, "kernels.json"), "w") as f:
    json.dump(doc, f, indent=1)
  lines = [f"# Kernel benchmark: {bench.device}", "",
           f"jax {bench.meta['jax_version']}, git {bench.meta['git_sha'][:10]}, {stamp}. "
           f"Measured ceilings: copy {ceil['copy_GBps']:.0f} GB/s, bf16 GEMM "
           f"{ceil['bf16_gemm_TFLOPs']:.0f} TFLOP/s. ratio = dense_ms / ms (> 1: faster than "
           "dense). prune_pack: dense_ms is one bf16 GEMM of the layer at that batch.", "",
           "| op | shape | pattern | batch | impl | dense ms | ms | ratio | note |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in bench.rows:
    note = ""
    if r["op"] == "prune_pack":
      note = f"{r['variant']}, {100 * r['fraction_of_gemm']:.1f}% of GEMM"
    elif "packed_GBps" in r:
      note = f"{r['packed_GBps']:.0f} GB/s packed vs {r['dense_GBps']:.0f} GB/s dense"
      if r.get("blocks"):
        note += ", blocks bo={bo} rows={rows} splits={splits}".format(**r["blocks"])
    lines.append(f"| {r['op']} | {r['shape']} ({r['k']}x{r['o']}) | {r['pattern']} | "
                 f"{r['batch']} | {r['implementation']} | {r['dense_ms']:.4f} | {r['ms']:.4f} | "
                 f"{r['ratio']:.2f} | {note} |")
  if bench.skipped:
    lines += ["", f"Not run (time budget): {len(bench.skipped)} items: " + "; ".join(
        bench.skipped)]
  with open(os.path.join(out, "kernels.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="benchmarks")
  parser.add_argument("--grid", action="store_true",
                      help="the issue's full grid: every shape x pattern x batch (see cell)")
  parser.add_argument("--shapes", default="", help="comma-separated bench shape names (all)")
  parser.add_argument("--patterns", default=",".join(GRID_PATTERNS), help="grid patterns")
  parser.add_argument("--cells", default="", help="grid cells 'shape:N:M,...' (instead of --grid)")
  parser.add_argument("--sweep", action="store_true", help="block sweep of the packed products")
  parser.add_argument("--smoke", action="store_true",
                      help="CI shapes: checks the script on CPU (tiny ceilings; with --cells, runs "
                      "those cells instead of the fixed smoke items)")
  parser.add_argument("--budget_s", type=float, default=420.0,
                      help="stop starting new items after this many seconds")
  parser.add_argument("--max_rotate", type=int, default=16,
                      help="at most this many rotated input sets per timed op; each is a traced "
                      "copy (Triton kernels compile once per copy), so fewer sets compile faster "
                      "but leave weights under ~150 MB / sets partly L2-resident")
  args = parser.parse_args()
  if jax.default_backend() != "gpu":
    print("warning: no GPU; kernels run in the Pallas interpreter and times mean nothing")
  bench = Bench(args)
  ceil = ceilings(args.smoke)
  print(f"device {bench.device}: {ceil}", flush=True)
  for item in plan(args):
    what = f"{item[0]} {item[1].name} {' '.join(str(a) for a in item[2:4])}"
    if bench.out_of_time(what):
      continue
    t0 = time.time()
    try:
      getattr(bench, item[0])(item[1], *item[2:])
    except Exception as e:  # noqa: BLE001 - record and go on: one failing shape must not hide rest
      print(f"FAILED {what}: {type(e).__name__}: {e}", flush=True)
      bench.skipped.append(f"{what} (failed: {type(e).__name__}: {str(e)[:200]})")
    print(f"  [{what}: {time.time() - t0:.1f}s]", flush=True)
    write(bench, args.out, ceil)
  write(bench, args.out, ceil)


if __name__ == "__main__":
  main()
