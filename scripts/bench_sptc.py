"""Sparse tensor-core (``sparse_tc``) kernels on the GPU: layout probe, checks, GEMM benchmark.

  python -m nmsparse.native.build
  python scripts/bench_sptc.py --out OUT --sections probe,check,gemm

Sections (each writes ``OUT/<section>.json`` or ``.npz``; all timings in one process, SPEC §3):
* ``probe``: cuSPARSELt's compressed bytes of crafted 2:4 matrices (values that encode their row
  and column, random masks), for working out its layout offline.
* ``check``: native prune vs its jnp reference (bit for bit); ``spmm`` of the library's
  compression vs ``x @ A^T``; our compressor's bytes vs the library's (when built).
* ``gemm``: forward (``x @ W_ff``) and backward-data (``dy @ W_bp^T``) products, dense ``jnp.dot``
  vs ``spmm``, with the prune and the compression timed alone and included.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


from bench_kernels import rel_err, time_op  # this folder: the kernel grid's timing (rotated inputs)
from nmsparse import native
from nmsparse.kernels import sparse_tc
from nmsparse.types import NMPattern

BF16 = jnp.bfloat16

# (name, tokens, K, O): the layer's product x [tokens, K] @ W [K, O].
GEMM_SHAPES = [
    ("vit_b_mlp1", 32768, 768, 3072),
    ("vit_b_mlp2", 32768, 3072, 768),
    ("vit_b_qkv", 50176, 768, 2304),
    ("vit_b_out", 50176, 768, 768),
    ("square_4096", 16384, 4096, 4096),
    ("square_8192", 8192, 8192, 8192),
    ("vit_cifar_mlp1", 65536, 384, 1536),
    ("vit_cifar_mlp2", 65536, 1536, 384),
    ("r50_1x1_256_64", 200704, 256, 64),
    ("r50_1x1_64_256", 200704, 64, 256),
    ("r50_1x1_512_128", 50176, 512, 128),
    ("r50_1x1_1024_256", 12544, 1024, 256),
    ("r50_1x1_2048_512", 3136, 2048, 512),
]


def random_24_mask(rng, m, k):
  """A random mask with exactly 2 of every 4 consecutive entries of a row kept."""
  pairs = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
  choice = pairs[rng.integers(0, 6, size=(m, k // 4))]
  mask = np.zeros((m, k // 4, 4), bool)
  idx = np.indices((m, k // 4))
  mask[idx[0], idx[1], choice[..., 0]] = True
  mask[idx[0], idx[1], choice[..., 1]] = True
  return mask.reshape(m, k)


def probe(out: str):
  rng = np.random.default_rng(0)
  sizes = [(32, 32), (32, 64), (64, 32), (64, 64), (64, 128), (128, 64), (128, 128), (96, 160),
           (256, 128), (128, 256)]
  arrays, meta = {}, []
  for m, k in sizes:
    for t in range(12):
      mask = random_24_mask(rng, m, k)
      rows = np.broadcast_to(np.arange(m)[:, None] + 1, (m, k))
      cols = np.broadcast_to(np.arange(k)[None, :], (m, k))
      for name, vals in (("row", rows), ("collo", cols % 128 + 1), ("colhi", cols // 128 + 1)):
        a = jnp.asarray(np.where(mask, vals, 0).astype(np.float32), BF16)
        arrays[f"{m}x{k}_{t}_{name}"] = np.asarray(sparse_tc.lib_compress(a))
      arrays[f"{m}x{k}_{t}_mask"] = mask
    meta.append(dict(m=m, k=k, size=native.compressed_size(m, k)[0]))
  sizes_grid = [dict(m=m, k=k, size=native.compressed_size(m, k)[0])
                for m in (32, 64, 96, 128, 256, 768, 3072, 4096)
                for k in (32, 64, 128, 256, 768, 4096)]
  np.savez_compressed(os.path.join(out, "probe.npz"), **arrays)
  with open(os.path.join(out, "probe_sizes.json"), "w") as f:
    json.dump(dict(probed=meta, grid=sizes_grid, version=native.library().nms_sptc_version()), f)
  print(f"probe: {len(arrays)} arrays, {len(sizes_grid)} sizes")


def check(out: str):
  """Native prune and compress against their jnp references (bit for bit), our compressed bytes
  against the library's on exact 2:4 operands, and every product against ``x @ A^T``."""
  rows = []
  for pattern in ("2:4", "2:8", "1:4", "1:8", "2:16"):
    p = NMPattern.parse(pattern)
    for (k, o) in ((256, 512), (768, 384), (64, 128)):
      w = jax.random.normal(jax.random.key(k + o), (k, o), jnp.float32)
      got = sparse_tc.prune(w, p, bp=True)
      want = sparse_tc.reference_prune(w, p, bp=True)
      comp = sparse_tc.compress(w, p, bp=True)
      comp_ref = sparse_tc.reference_compress(w, p, bp=True)
      row = dict(pattern=pattern, k=k, o=o,
                 prune_exact=all(bool(jnp.array_equal(g, r)) for g, r in zip(got, want)),
                 compress_exact=all(bool(jnp.array_equal(g, r)) for g, r in zip(comp, comp_ref)))
      if pattern == "2:4":  # exactly 2 nonzeros in every group of 4: the library's bytes are ours
        row["lib_bytes_equal"] = (bool(jnp.array_equal(comp[0], sparse_tc.lib_compress(got[0]))) and
                                  bool(jnp.array_equal(comp[1], sparse_tc.lib_compress(got[1]))))
      for n in (7, 16, 100):
        x = jax.random.normal(jax.random.key(n), (n, k), jnp.float32).astype(BF16)
        dy = jax.random.normal(jax.random.key(n + 1), (n, o), jnp.float32).astype(BF16)
        row[f"ff_rel_err_{n}"] = rel_err(sparse_tc.spmm(comp[0], x, o, k),
                                         sparse_tc.reference_spmm(want[0], x))
        row[f"bp_rel_err_{n}"] = rel_err(sparse_tc.spmm(comp[1], dy, k, o),
                                         sparse_tc.reference_spmm(want[1], dy))
      rows.append(row)
  with open(os.path.join(out, "check.json"), "w") as f:
    json.dump(rows, f, indent=1)
  bad = [r for r in rows if not (r["prune_exact"] and r["compress_exact"] and
                                 r.get("lib_bytes_equal", True)) or
         max(v for key, v in r.items() if "rel_err" in key) > 1e-2]
  print(f"check: {len(rows)} rows, {len(bad)} bad")
  for r in bad[:10]:
    print("  BAD", r)


def gemm(out: str, patterns=("2:4", "2:8")):
  rows = []
  for name, n, k, o in GEMM_SHAPES:
    x = lambda i: (jax.random.normal(jax.random.key(i), (n, k), jnp.float32).astype(BF16),)
    dy = lambda i: (jax.random.normal(jax.random.key(100 + i), (n, o), jnp.float32).astype(BF16),)
    w = jax.random.normal(jax.random.key(7), (k, o), jnp.float32)
    wb = w.astype(BF16)
    act_bytes = 2 * n * (k + o)
    dense_ff = time_op(lambda x: jnp.dot(x, wb, preferred_element_type=jnp.float32).astype(BF16),
                       x, act_bytes)
    dense_bp = time_op(lambda dy: jnp.dot(dy, wb.T,
                                          preferred_element_type=jnp.float32).astype(BF16),
                       dy, act_bytes)
    for pattern in patterns:
      p = NMPattern.parse(pattern)
      a_ff, a_bp, _ = sparse_tc.prune(w, p, bp=True)
      c_ff, c_bp, _ = sparse_tc.compress(w, p, bp=True)
      sp_ff = time_op(lambda x: sparse_tc.spmm(c_ff, x, o, k), x, act_bytes)
      sp_bp = time_op(lambda dy: sparse_tc.spmm(c_bp, dy, k, o), dy, act_bytes)
      prune_ms = time_op(lambda w: sparse_tc.prune(w, p, bp=True), lambda i: (w + i,), 8 * k * o)
      lib_ms = time_op(lambda a, b: (sparse_tc.lib_compress(a), sparse_tc.lib_compress(b)),
                       lambda i: (a_ff, a_bp), 8 * k * o)
      row = dict(op="sptc_gemm", shape=name, tokens=n, K=k, O=o, pattern=pattern,
                 device=jax.devices()[0].device_kind, jax_version=jax.__version__,
                 dense_ff_ms=dense_ff, dense_bp_ms=dense_bp, spmm_ff_ms=sp_ff, spmm_bp_ms=sp_bp,
                 prune_ms=prune_ms, lib_compress_ms=lib_ms,
                 ratio_ff_kernel=dense_ff / sp_ff, ratio_bp_kernel=dense_bp / sp_bp,
                 ratio_ff_lib_included=dense_ff / (sp_ff + prune_ms + lib_ms),
                 dense_tflops_ff=2 * n * k * o / dense_ff / 1e9)
      own_ms = time_op(lambda w: sparse_tc.compress(w, p, bp=True), lambda i: (w + i,), 8 * k * o)
      row.update(own_compress_ms=own_ms,
                 ratio_ff_included=dense_ff / (sp_ff + own_ms / 2),
                 ratio_bp_included=dense_bp / (sp_bp + own_ms / 2),
                 ratio_ff_full_compress=dense_ff / (sp_ff + own_ms),
                 ratio_pair_included=(dense_ff + dense_bp) / (sp_ff + sp_bp + own_ms),
                 compress_share_of_gemm=own_ms / dense_ff)
      rows.append(row)
      row["alg_ff"] = native.prepare_spmm(o, n + (-n) % 16, k)[1]
      row["alg_bp"] = native.prepare_spmm(k, n + (-n) % 16, o)[1]
      print(f"{name:18s} {pattern} dense ff {dense_ff:.3f} bp {dense_bp:.3f} | spmm ff {sp_ff:.3f} "
            f"bp {sp_bp:.3f} ({dense_ff / sp_ff:.2f}x / {dense_bp / sp_bp:.2f}x) | prune "
            f"{prune_ms:.3f} lib {lib_ms:.3f} own {row['own_compress_ms']:.3f} -> incl. "
            f"{row['ratio_ff_included']:.2f}x / {row['ratio_bp_included']:.2f}x",
            flush=True)
  with open(os.path.join(out, "gemm.json"), "w") as f:
    json.dump(rows, f, indent=1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--sections", default="probe,check,gemm")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  why = native.status()
  if why:
    sys.exit(f"sparse_tc unavailable: {why}")
  print("device:", jax.devices()[0].device_kind, "cuSPARSELt", native.library().nms_sptc_version())
  for section in args.sections.split(","):
    t0 = time.time()
    {"probe": probe, "check": check, "gemm": gemm}[section](args.out)
    print(f"[{section}] {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
  main()
