"""Issue 10's benchmark, one GPU, one process (SPEC §3): the native value-serial forward
(``nmsparse.kernels.value_serial.vs_matmul``) against dense ``jnp.dot`` at small batches, and the
whole-model forward of exported ViTs.

    python scripts/bench_decode.py --out /tmp/d                  # kernel table + models
    python scripts/bench_decode.py --out /tmp/d --sections sweep # split-count sweep only

Sections:
* ``kernel``: batch 1, 4, 8, 16, 32, 64 x K x O in {4096^2, 8192^2, 768x3072, 3072x768,
  4096x11008, 11008x4096} (``--shapes``) x {2:8, 2:4, 1:8}: ``vs_matmul`` on the packed FF
  operand and ``blocked_matmul`` on its ``block_columns`` layout (``blocked_*``), the
  tensor-core kernels (``--tiled_kernels``, batch <= ``--pipe_max_batch``) and cuSPARSELt's
  product on the 2:4-structured operand (``sptc``, ``inference.sparse_tc_matmul``) vs ``x @ W``
  with the masked bf16 weight; operand bytes / time next to the copy ceiling.
* ``sweep``: split counts around the default at a few shapes (tunes ``splits_for``).
* ``models``: batch 1 and 8 forward of ViT-B/16 (224 px) and the CIFAR ViT at 2:8, each
  ``inference.materialize``-d for its rows per dense product (batch x tokens): dense kernels vs
  ``implementation=None`` (``ms``, ``ratio``, ``paths``), vs the native kernel forced on every
  dense layer (``native_ms``, ``native_ratio``, ``native_paths``) and vs the sparse tensor cores
  forced on every dense layer (``sparse_tc_*``).

Timing is ``scripts/bench_kernels.time_op`` (rotated input sets so weights are not L2-resident).
Results: ``decode.json`` under ``--out``; a short table is printed last.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import _git_sha, ceilings, rel_err, time_op  # noqa: E402

from nmsparse.export import inference  # noqa: E402
from nmsparse.kernels import reference_nm_matmul  # noqa: E402
from nmsparse.kernels import value_serial as vs  # noqa: E402
from nmsparse.models import ViT  # noqa: E402
from nmsparse.pack import pack_nm, packed_bytes, unpack  # noqa: E402
from nmsparse.types import NMPattern  # noqa: E402

BF16 = jnp.bfloat16
SHAPES = [(4096, 4096), (8192, 8192), (768, 3072), (3072, 768), (4096, 11008), (11008, 4096)]
PATTERNS = ["2:8", "2:4", "1:8"]
BATCHES = [1, 4, 8, 16, 32, 64]
L2_SPAN_SETS = 150e6 / 8  # bytes_per_set that makes time_op rotate 8 sets


def _device() -> str:
  return jax.devices()[0].device_kind


def _copies(tree, i):
  return tree if i == 0 else jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def time_stacked(fn, x, sets) -> float:
  """ms per op of ``fn(x, s)`` over the rotated operand ``sets``, all in one jit with the results
  stacked into one array: each product writes an intermediate of the executable, as a layer of
  a model's forward does (returned per op, fresh output buffers made every call re-record the
  command buffer's custom calls: +2 to +9 us per op on the H200, ``scripts/decode_diag.py``).
  ``sets`` hold only the op's own operand: every argument of the call adds host dispatch time,
  which the op's time would include wherever dispatch outlasts the device work."""
  stacked = lambda x, *s: jnp.stack([fn(x, si) for si in s])  # noqa: E731
  return time_op(stacked, lambda i: (x, *sets), 1e12, 1) / len(sets)


def kernel_rows(args, copy_gbps: float) -> list[dict]:
  """Dense ``x @ W`` vs the CUDA-core kernel (``vs_matmul``) vs the pipelined tensor-core kernels
  (``tiled_matmul(..., kernel=name)`` for each of ``--tiled_kernels`` on the ``prepare``-d operand;
  N <= 2, M in 4, 8; batch <= ``--pipe_max_batch``), each on ``--max_rotate`` weight copies
  (``time_stacked``)."""
  rows = []
  for k, o in args.shapes:
    w = jax.random.normal(jax.random.key(k + o), (k, o), jnp.float32) / np.sqrt(k)
    for pattern in args.patterns:
      p = NMPattern.parse(pattern)
      ff = pack_nm(w, p, axis=0, dtype=BF16)
      dense_w = unpack(ff)  # the masked bf16 weight: what a dense deployment reads
      tiled = vs.prepare(ff) if vs.tiled_unsupported(BF16, ff) is None else None
      sptc = (inference.compress_ff(ff) if args.sparse_tc and
              inference.sparse_tc_unsupported(BF16, ff) is None else None)
      nbytes = packed_bytes((k, o), p, 0, 2)
      tiled_bytes = (sum(a.nbytes for a in jax.tree.leaves(tiled)) if tiled is not None
                     else None)
      blocked = vs.block_columns(ff)
      blocked_bytes = sum(a.nbytes for a in jax.tree.leaves(blocked))
      sets = [_copies((dense_w, ff, tiled, sptc, blocked), i) for i in range(args.max_rotate)]
      for batch in args.batches:
        x = jax.random.normal(jax.random.key(batch), (batch, k), jnp.float32).astype(BF16)
        ref = reference_nm_matmul(x, ff)
        dense_ms = time_stacked(lambda x, w: x @ w, x, [s[0] for s in sets])
        fma_ms = time_stacked(vs.vs_matmul, x, [s[1] for s in sets])
        row = {"op": "fwd_packed_native", "K": k, "O": o, "pattern": str(p), "batch": batch,
               "device": _device(), "dense_ms": dense_ms, "fma_ms": fma_ms,
               "fma_ratio": dense_ms / fma_ms, "fma_rel_err": rel_err(vs.vs_matmul(x, ff), ref),
               "packed_bytes": nbytes, "dense_GBps": 2 * k * o / (dense_ms * 1e-3) / 1e9,
               "fma_splits": vs.splits_for(batch, k, o, p.m), "timing": "stacked",
               "jax_version": jax.__version__, "git_sha": _git_sha()}
        best, best_ms, best_bytes = "fma", fma_ms, nbytes
        ms = time_stacked(vs.blocked_matmul, x, [s[4] for s in sets])
        row.update(blocked_ms=ms, blocked_ratio=dense_ms / ms, blocked_bytes=blocked_bytes,
                   blocked_rel_err=rel_err(vs.blocked_matmul(x, blocked), ref))
        if ms < best_ms:
          best, best_ms, best_bytes = "blocked", ms, blocked_bytes
        for name in args.tiled_kernels if tiled is not None and batch <= args.pipe_max_batch \
            else ():
          fn = functools.partial(vs.tiled_matmul, kernel=name)
          ms = time_stacked(fn, x, [s[2] for s in sets])
          row.update({f"{name}_ms": ms, f"{name}_ratio": dense_ms / ms,
                      f"{name}_bytes": tiled_bytes, f"{name}_rel_err": rel_err(fn(x, tiled), ref),
                      f"{name}_splits": vs.pipe_splits_for(batch, *tiled.values.shape[1::-1])})
          if ms < best_ms:
            best, best_ms, best_bytes = name, ms, tiled_bytes
        if sptc is not None:  # cuSPARSELt on the 2:4-structured operand (any batch)
          try:
            ms = time_stacked(inference.sparse_tc_matmul, x, [s[3] for s in sets])
          except Exception as e:  # noqa: BLE001 - recorded in the row and printed, not hidden
            row["sptc_error"] = str(e)[:300]
            print(f"{k}x{o} {p} b{batch}: sptc failed: {row['sptc_error']}", flush=True)
          else:
            row.update(sptc_ms=ms, sptc_ratio=dense_ms / ms, sptc_bytes=int(sptc.data.nbytes),
                       sptc_rel_err=rel_err(inference.sparse_tc_matmul(x, sptc), ref))
            if ms < best_ms:
              best, best_ms, best_bytes = "sptc", ms, int(sptc.data.nbytes)
        gbps = best_bytes / (best_ms * 1e-3) / 1e9
        row.update(ms=best_ms, kernel=best, ratio=dense_ms / best_ms, packed_GBps=gbps,
                   fraction_of_copy=gbps / copy_gbps)
        rows.append(row)
        with open(os.path.join(args.out, "kernel_partial.json"), "w") as f:  # a cut-off run
          json.dump(rows, f, indent=1)                                       # keeps its rows
        tiled_us = "".join(f", {n} {row.get(f'{n}_ms', float('nan')) * 1e3:.1f} us"
                           for n in ("blocked", *args.tiled_kernels, "sptc"))
        print(f"{k}x{o} {p} b{batch}: dense {dense_ms * 1e3:.1f} us, fma {fma_ms * 1e3:.1f} us"
              f"{tiled_us} -> {best} {row['ratio']:.2f}x at {gbps:.0f} GB/s", flush=True)
  return rows


def sweep_rows(args) -> list[dict]:
  rows = []
  for (k, o), pattern, batch in [((4096, 4096), "2:8", 1), ((4096, 4096), "2:8", 16),
                                 ((4096, 4096), "2:4", 16), ((3072, 768), "2:8", 8),
                                 ((768, 3072), "2:8", 8), ((8192, 8192), "2:8", 16)]:
    p = NMPattern.parse(pattern)
    w = jax.random.normal(jax.random.key(1), (k, o), jnp.float32)
    ff = pack_nm(w, p, axis=0, dtype=BF16)
    x = jax.random.normal(jax.random.key(2), (batch, k), jnp.float32).astype(BF16)
    nbytes = packed_bytes((k, o), p, 0, 2)
    base = vs.splits_for(batch, k, o, p.m)
    gq = -(-(k // p.m) // (8 // (2 if p.m <= 4 else 4)))
    for s in sorted({1, 2, 4, base, 8, 16}):
      rows_per = -(-gq // s)
      if s > max(1, gq // vs.WARPS) or rows_per * 16 * vs.batch_tile(batch) * 2 > vs.SMEM_X_BYTES:
        continue
      fn = functools.partial(vs.vs_matmul, splits=s)
      ms = time_op(fn, lambda i: (x, jax.tree.map(lambda a: jnp.array(a, copy=True), ff)), nbytes,
                   args.max_rotate)
      rows.append({"K": k, "O": o, "pattern": str(p), "batch": batch, "splits": s,
                   "default_splits": base, "ms": ms, "packed_GBps": nbytes / (ms * 1e-3) / 1e9})
      print(f"sweep {k}x{o} {p} b{batch} splits {s}{' (default)' if s == base else ''}: "
            f"{ms * 1e3:.1f} us", flush=True)
    if vs.tiled_unsupported(BF16, ff) is None:
      tl = vs.prepare(ff)
      kt, ot = tl.values.shape[1], tl.values.shape[0]
      tb = vs.tiled_splits_for(batch, kt, ot)
      for s in sorted({1, 2, 4, tb, 8, 16}):
        if s > kt // vs.STEP_TILES:
          continue
        fn = functools.partial(vs.tiled_matmul, splits=s)
        ms = time_op(fn, lambda i: (x, jax.tree.map(lambda a: jnp.array(a, copy=True), tl)),
                     nbytes, args.max_rotate)
        rows.append({"K": k, "O": o, "pattern": str(p), "batch": batch, "splits": s,
                     "kernel": "tiled", "default_splits": tb, "ms": ms})
        print(f"sweep tiled {k}x{o} {p} b{batch} splits {s}{' (default)' if s == tb else ''}: "
              f"{ms * 1e3:.1f} us", flush=True)
  return rows


def profile_rows(args) -> list[dict]:
  """Kernel durations from a profiler trace (device time apart from host dispatch)."""
  from profile_step import kernel_durations

  rows = []
  for (k, o), pattern, batch in [((4096, 4096), "2:8", 1), ((4096, 4096), "2:8", 16),
                                 ((4096, 4096), "2:4", 16), ((768, 3072), "2:8", 8)]:
    p = NMPattern.parse(pattern)
    w = jax.random.normal(jax.random.key(1), (k, o), jnp.float32)
    ff = pack_nm(w, p, axis=0, dtype=BF16)
    dw = unpack(ff)
    x = jax.random.normal(jax.random.key(2), (batch, k), jnp.float32).astype(BF16)
    tl = vs.prepare(ff)
    sets = [jax.tree.map(lambda a: jnp.array(a, copy=True), (ff, dw, tl)) for _ in range(8)]
    f = jax.jit(lambda x, sets: [vs.vs_matmul(x, s[0]) for s in sets] +
                [x @ s[1] for s in sets] + [vs.tiled_matmul(x, s[2]) for s in sets])
    for name, g in (("pipe", lambda x, s: vs.tiled_matmul(x, s[2])),
                    ("regs_nocb", lambda x, s: vs.tiled_matmul(x, s[2], kernel="regs",
                                                               command_buffer=False)),
                    ("fma", lambda x, s: vs.vs_matmul(x, s[0])), ("dense", lambda x, s: x @ s[1])):
      wall = time_op(g, lambda i: (x, sets[i]), L2_SPAN_SETS, len(sets))
      print(f"wall {k}x{o} {p} b{batch} {name}: {wall * 1e3:.1f} us", flush=True)
      rows.append({"K": k, "O": o, "pattern": str(p), "batch": batch, "variant": name,
                   "wall_us": wall * 1e3})
    kernels = kernel_durations(f, x, sets)
    rows.append({"K": k, "O": o, "pattern": str(p), "batch": batch, "kernels": kernels})
    for name, v in sorted(kernels.items(), key=lambda kv: -kv[1]["mean_us"] * kv[1]["count"])[:6]:
      print(f"profile {k}x{o} {p} b{batch}: {v['count']:4d} x {v['mean_us']:7.2f} us  {name[:70]}",
            flush=True)
  return rows


def dense_rows(model, image_size: int, batch: int) -> int:
  """Rows of each dense product of ``model``'s forward: batch x tokens for a ViT (patch tokens, no
  class token; ``nmsparse/models/vit.py``), the batch otherwise."""
  if isinstance(model, ViT):
    return batch * (image_size // model.patch) ** 2
  return batch


def _random_like(params):
  """Every parameter drawn anew (normal, scale 1/sqrt(fan-in) for kernels): the ViT's head starts
  at zeros, which makes every forward's logits zero and any comparison of two forwards exact."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  scale = lambda a: 1.0 / np.sqrt(np.prod(a.shape[:-1])) if a.ndim > 1 else 0.1  # noqa: E731
  return jax.tree.unflatten(tree, [jax.random.normal(k, a.shape, a.dtype) * scale(a)
                                   for k, a in zip(keys, leaves)])


def model_rows(args) -> list[dict]:
  from experiments.config_io import apply_overrides, load_config
  from nmsparse.export import export
  from nmsparse.train.setup import build_model, build_rules

  rows = []
  for cfg_path in args.models:
    config = apply_overrides(load_config(cfg_path), {"method": "bdwp", "pattern": "2:8",
                                                     "implementation": "xla"})
    rules = build_rules(config)
    model = build_model(config, rules)
    size = config.data.image_size
    shape = (size, size, 3)
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1,) + shape), train=False))(
        jax.random.key(0))
    variables = {**variables, "params": _random_like(variables["params"])}
    exported = export(variables, rules, config.method, dtype=BF16)
    for batch in args.model_batches:
      images = jax.random.normal(jax.random.key(batch), (batch,) + shape, jnp.float32)
      n_rows = dense_rows(model, size, batch)
      dense_vars = inference.materialize(exported, n_rows, implementation="dense")
      auto_vars = inference.materialize(exported, n_rows)
      native_vars = inference.materialize(exported, n_rows, implementation="native")
      sptc_vars = inference.materialize(exported, n_rows, implementation="sparse_tc")

      def fwd(variables, x):
        return inference.apply(model, variables, x, train=False)

      # 8 forwards per jitted call (one weight set: a server reuses it; ViT weights exceed L2),
      # so one call's host dispatch is spread over them (call 5 timed one per call: +-30% noise)
      imgs = [images + 0.0 * i for i in range(8)]
      dense_ms = time_op(fwd, lambda i: (dense_vars, imgs[i]), L2_SPAN_SETS, 8)
      auto_ms = time_op(fwd, lambda i: (auto_vars, imgs[i]), L2_SPAN_SETS, 8)
      native_ms = time_op(fwd, lambda i: (native_vars, imgs[i]), L2_SPAN_SETS, 8)
      sptc_ms = time_op(fwd, lambda i: (sptc_vars, imgs[i]), L2_SPAN_SETS, 8)
      want = fwd(dense_vars, images)
      err = rel_err(fwd(auto_vars, images), want)
      native_err = rel_err(fwd(native_vars, images), want)
      sptc_err = rel_err(fwd(sptc_vars, images), want)
      paths = inference.layer_paths(auto_vars, exported.manifest)
      native_paths = inference.layer_paths(native_vars, exported.manifest)
      rows.append({"op": "model_forward", "config": config.name, "batch": batch,
                   "weights": "redrawn",  # _random_like: outputs that can differ
                   "rows": n_rows, "pattern": "2:8", "device": _device(), "dense_ms": dense_ms,
                   "ms": auto_ms, "ratio": dense_ms / auto_ms, "rel_err": err, "paths": paths,
                   "native_ms": native_ms, "native_ratio": dense_ms / native_ms,
                   "native_rel_err": native_err, "native_paths": native_paths,
                   "sparse_tc_ms": sptc_ms, "sparse_tc_ratio": dense_ms / sptc_ms,
                   "sparse_tc_rel_err": sptc_err,
                   "sparse_tc_paths": inference.layer_paths(sptc_vars, exported.manifest),
                   "jax_version": jax.__version__, "git_sha": _git_sha()})
      print(f"{config.name} b{batch} ({n_rows} rows): dense {dense_ms:.3f} ms, exported "
            f"{auto_ms:.3f} ms ({dense_ms / auto_ms:.2f}x), native {native_ms:.3f} ms "
            f"({dense_ms / native_ms:.2f}x), sparse_tc {sptc_ms:.3f} ms "
            f"({dense_ms / sptc_ms:.2f}x), paths {paths}", flush=True)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--sections", default="kernel,models")
  ap.add_argument("--patterns", nargs="+", default=PATTERNS)
  ap.add_argument("--batches", nargs="+", type=int, default=BATCHES)
  ap.add_argument("--shapes", nargs="+", default=[f"{k}x{o}" for k, o in SHAPES],
                  help="K x O of the kernel section, e.g. 4096x4096")
  ap.add_argument("--model_batches", nargs="+", type=int, default=[1, 8])
  ap.add_argument("--models", nargs="+",
                  default=["configs/vit_b16_imagenet224.py:speed", "configs/vit_cifar10.py"])
  ap.add_argument("--max_rotate", type=int, default=8)
  ap.add_argument("--pipe_max_batch", type=int, default=32,
                  help="largest batch at which the pipelined tensor-core kernels are also timed")
  ap.add_argument("--no_sparse_tc", dest="sparse_tc", action="store_false",
                  help="leave out cuSPARSELt's product on the 2:4-structured operand (sptc_*)")
  ap.add_argument("--tiled_kernels", nargs="+", default=["pipe", "bulk"],
                  choices=[k for k in vs.TILED_KERNELS if k != "regs"],
                  help="the tensor-core kernels timed (value_serial.tiled_matmul's kernel=)")
  args = ap.parse_args()
  args.shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes]
  os.makedirs(args.out, exist_ok=True)
  result = {"device": _device(), "jax_version": jax.__version__, "git_sha": _git_sha()}
  sections = args.sections.split(",")
  result["ceilings"] = ceilings()
  print("ceilings", result["ceilings"], flush=True)
  path = os.path.join(args.out, "decode.json")

  def save():
    with open(path, "w") as f:
      json.dump(result, f, indent=1)

  for name, fn in (("profile", lambda: profile_rows(args)),
                   ("sweep", lambda: sweep_rows(args)),
                   ("kernel", lambda: kernel_rows(args, result["ceilings"]["copy_GBps"])),
                   ("models", lambda: model_rows(args))):
    if name in sections:
      result[name] = fn()
      save()
  for r in result.get("kernel", []):
    if r["K"] >= 4096 and r["O"] >= 4096 and r["batch"] <= 16:
      print(f"| {r['K']}x{r['O']} | {r['pattern']} | {r['batch']} | {r['kernel']} | "
            f"{r['ratio']:.2f} | {r['fraction_of_copy']:.2f} |")
  for r in result.get("models", []):
    print(f"| {r['config']} | b{r['batch']} | {r['rows']} | {r['ratio']:.2f} | "
          f"{r['native_ratio']:.2f} |")


if __name__ == "__main__":
  main()
