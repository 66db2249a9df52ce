"""Issue 10's diagnostics (one GPU, one process): the small-batch kernels' wall time per op under two
ways of holding their outputs, their device time from a profiler trace, and the pipelined kernel's
split and stage sweep, and the CUDA-core kernel's unroll and split sweep (``unroll``). Tunes
``value_serial``; the committed table comes from
``scripts/bench_decode.py``.

    python scripts/decode_diag.py --out /tmp/d --sections check,time,profile,sweep
    ncu --clock-control none -k regex:vs_ python scripts/decode_diag.py --sections ncu

``time``: every op runs on 8 rotated weight copies inside one jit (``bench_kernels.time_op``);
``outputs=return`` returns the 8 results (fresh buffers every call, as ``time_op`` does),
``outputs=stack`` stacks them into one array, so each op writes an intermediate of the executable,
as a layer of a model's forward does. Rows go to ``diag.json`` under ``--out``.
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
from bench_kernels import L2_SPAN, _git_sha, rel_err, time_op  # noqa: E402

from nmsparse.kernels import reference_nm_matmul  # noqa: E402
from nmsparse.kernels import value_serial as vs  # noqa: E402
from nmsparse.pack import pack_nm, unpack  # noqa: E402
from nmsparse.types import NMPattern  # noqa: E402

BF16 = jnp.bfloat16
SETS = 8


def _operands(k, o, pattern, batch):
  p = NMPattern.parse(pattern)
  w = jax.random.normal(jax.random.key(k + o), (k, o), jnp.float32) / np.sqrt(k)
  ff = pack_nm(w, p, axis=0, dtype=BF16)
  x = jax.random.normal(jax.random.key(batch), (batch, k), jnp.float32).astype(BF16)
  ops = (ff, unpack(ff), vs.prepare(ff))
  sets = [ops] + [jax.tree.map(lambda a: jnp.array(a, copy=True), ops) for _ in range(SETS - 1)]
  return x, ff, sets


def variants(k, o, batch):
  """name -> (which operand of a set, op on it)."""
  out = {"dense": (1, lambda x, w: x @ w), "fma": (0, vs.vs_matmul)}
  for name in ("regs", "pipe", "bulk"):
    out[name] = (2, functools.partial(vs.tiled_matmul, kernel=name))
  return out


def time_stacked(fn, x, sets) -> float:
  """``time_op`` with the ops' outputs stacked into one array inside the jit (``sets``: the op's
  own operand of each copy; every argument adds host dispatch time)."""
  stacked = lambda x, *s: jnp.stack([fn(x, si) for si in s])  # noqa: E731
  return time_op(lambda *a: stacked(*a), lambda i: (x, *sets), 1e12, 1) / len(sets)


def check_rows(args):
  rows = []
  for (k, o), pattern, batch in [((4096, 4096), "2:8", 1), ((4096, 4096), "2:8", 16),
                                 ((4096, 4096), "2:4", 8), ((8192, 8192), "1:8", 4),
                                 ((11008, 4096), "2:8", 16), ((768, 3072), "1:4", 3)]:
    x, ff, sets = _operands(k, o, pattern, batch)
    ref = reference_nm_matmul(x, ff)
    for kernel in args.kernels:
      for st in vs.PIPE_STAGES:
        for splits in (1, 3, 8, 12):
          err = rel_err(vs.tiled_matmul(x, sets[0][2], kernel=kernel, stages=st, splits=splits),
                        ref)
          rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, kernel=kernel, stages=st,
                           splits=splits, rel_err=err))
          print(f"check {k}x{o} {pattern} b{batch} {kernel} stages {st} splits {splits}: "
                f"rel err {err:.2e}", flush=True)
  return rows


def time_rows(args):
  rows = []
  for (k, o) in args.shapes:
    for pattern in args.patterns:
      for batch in args.batches:
        x, ff, sets = _operands(k, o, pattern, batch)
        for name, (j, fn) in variants(k, o, batch).items():
          ret = time_op(fn, lambda i, j=j: (x, sets[i][j]), L2_SPAN / SETS, SETS)
          stk = time_stacked(fn, x, [s[j] for s in sets])
          rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, variant=name,
                           return_us=ret * 1e3, stack_us=stk * 1e3))
          print(f"time {k}x{o} {pattern} b{batch} {name:6s}: return {ret * 1e3:6.1f} us, "
                f"stack {stk * 1e3:6.1f} us", flush=True)
  return rows


def profile_rows(args):
  from profile_step import kernel_durations

  rows = []
  for (k, o), pattern, batch in [((4096, 4096), "2:8", 1), ((4096, 4096), "2:8", 16),
                                 ((8192, 8192), "2:4", 16)]:
    x, ff, sets = _operands(k, o, pattern, batch)
    fns = variants(k, o, batch)
    f = jax.jit(lambda x, sets: [jnp.stack([fn(x, s[j]) for s in sets]) for j, fn in fns.values()])
    kernels = kernel_durations(f, x, sets)
    rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, kernels=kernels))
    for name, v in sorted(kernels.items(), key=lambda kv: -kv[1]["mean_us"] * kv[1]["count"])[:8]:
      print(f"profile {k}x{o} {pattern} b{batch}: {v['count']:4d} x {v['mean_us']:7.2f} us  "
            f"{name[:80]}", flush=True)
  return rows


def sweep_rows(args):
  rows = []
  for (k, o), pattern, batch in [((4096, 4096), "2:8", 1), ((4096, 4096), "2:8", 16),
                                 ((8192, 8192), "2:8", 1), ((8192, 8192), "2:8", 16),
                                 ((4096, 4096), "2:4", 16), ((4096, 11008), "2:8", 8)]:
    x, ff, sets = _operands(k, o, pattern, batch)
    kt, ot = sets[0][2].values.shape[1], sets[0][2].values.shape[0]
    default = vs.pipe_splits_for(batch, kt, ot)
    for kernel in args.kernels:
      for st in (0, 2, 4):
        for splits in (1, 2, 3, 4, 8):
          fn = lambda x, s, kn=kernel, st=st, sp=splits: vs.tiled_matmul(  # noqa: E731
              x, s, kernel=kn, stages=st, splits=sp)
          tag = f"{k}x{o} {pattern} b{batch} {kernel} stages {st} splits {splits:2d}"
          try:
            us = time_stacked(fn, x, [s[2] for s in sets]) * 1e3
          except Exception as e:  # noqa: BLE001 - a ring that does not fit is reported, not fatal
            print(f"sweep {tag}: {e}"[:200])
            continue
          rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, kernel=kernel, stages=st,
                           splits=splits, default_splits=default, stack_us=us))
          print(f"sweep {tag}{' (default)' if splits == default else ''}: {us:6.1f} us",
                flush=True)
  return rows


def unroll_rows(args):
  """The CUDA-core kernel at each built unroll and a range of split counts, and on the blocked
  layout, against dense, at the products issue 10's targets name (K, O >= 4096) at 1 and 4 rows."""
  rows = []
  shapes = [(4096, 4096), (8192, 8192), (4096, 11008), (11008, 4096)]
  for (k, o), pattern, batch in [(s, p, b) for s in shapes for p in ("2:8", "2:4", "1:8")
                                 for b in (1, 4)]:
    x, ff, sets = _operands(k, o, pattern, batch)
    dense = time_stacked(lambda x, w: x @ w, x, [s[1] for s in sets]) * 1e3
    default = vs.splits_for(batch, k, o, ff.pattern.m)
    best = (np.inf, None)
    for unroll in (4, 8, 16):
      if not vs.unroll_built(batch, ff.pattern, unroll):
        continue
      for splits in sorted({default, 4, 8, 16}):
        fn = lambda x, s, sp=splits, u=unroll: vs.vs_matmul(x, s, splits=sp, unroll=u)  # noqa: E731
        us = time_stacked(fn, x, [s[0] for s in sets]) * 1e3
        rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, kernel="fma", unroll=unroll,
                         splits=splits, default_splits=default, stack_us=us, dense_us=dense))
        if us < best[0]:
          best = (us, (unroll, splits))
    blocked = [vs.block_columns(s[0]) for s in sets]
    bbest = (np.inf, None)
    for splits in sorted({default, 4, 8, 16}):
      fn = lambda x, s, sp=splits: vs.blocked_matmul(x, s, splits=sp)  # noqa: E731
      us = time_stacked(fn, x, blocked) * 1e3
      rows.append(dict(K=k, O=o, pattern=pattern, batch=batch, kernel="blocked",
                       unroll=vs.UNROLL, splits=splits, default_splits=default, stack_us=us,
                       dense_us=dense))
      if us < bbest[0]:
        bbest = (us, splits)
    print(f"unroll {k}x{o} {pattern} b{batch}: dense {dense:6.1f} us, best fma {best[0]:6.1f} us "
          f"at unroll/splits {best[1]} ({dense / best[0]:.2f}x), blocked {bbest[0]:6.1f} us at "
          f"splits {bbest[1]} ({dense / bbest[0]:.2f}x)", flush=True)
  return rows


def probe_rows(args):
  """The pipelined kernels at 2:8 in full, without its MMA (probe 1), and without its decode too
  (probe 2), at its default split count, one slice, and 16 slices (partials, no cluster)."""
  rows = []
  for (k, o), batch in [((4096, 4096), 1), ((4096, 4096), 16), ((8192, 8192), 1),
                        ((8192, 8192), 16)]:
    x, ff, sets = _operands(k, o, "2:8", batch)
    kt, ot = sets[0][2].values.shape[1], sets[0][2].values.shape[0]
    default = vs.pipe_splits_for(batch, kt, ot)
    for kernel in args.kernels:
      for splits in sorted({default, 1, 16}):
        for probe in (0, 1, 2):
          fn = lambda x, s, kn=kernel, sp=splits, pr=probe: vs.tiled_matmul(  # noqa: E731
              x, s, kernel=kn, splits=sp, probe=pr)
          us = time_stacked(fn, x, [s[2] for s in sets]) * 1e3
          rows.append(dict(K=k, O=o, pattern="2:8", batch=batch, kernel=kernel, splits=splits,
                           probe=probe, stack_us=us))
          print(f"probe {k}x{o} 2:8 b{batch} {kernel} splits {splits:2d} probe {probe}: "
                f"{us:6.1f} us", flush=True)
  return rows


def ncu_rows(args):
  """A few launches of each native kernel at 4096^2 2:8 (run under ncu -k regex:vs_)."""
  for batch in (1, 16):
    x, ff, sets = _operands(4096, 4096, "2:8", batch)
    for name, (j, fn) in variants(4096, 4096, batch).items():
      if name != "dense":
        jax.block_until_ready(jax.jit(fn)(x, sets[1][j]))
  return []


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="/tmp/decode_diag")
  ap.add_argument("--sections", default="check,time,profile,sweep")
  ap.add_argument("--shapes", nargs="*", default=["4096x4096", "8192x8192", "4096x11008"])
  ap.add_argument("--patterns", nargs="*", default=["2:8", "2:4"])
  ap.add_argument("--batches", nargs="*", type=int, default=[1, 8, 16])
  ap.add_argument("--kernels", nargs="*", default=["pipe", "bulk"],
                  help="tiled_matmul kernels of the check, sweep and probe sections")
  args = ap.parse_args()
  args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
  os.makedirs(args.out, exist_ok=True)
  doc = {"device": jax.devices()[0].device_kind, "jax_version": jax.__version__,
         "git_sha": _git_sha(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
  for section in args.sections.split(","):
    doc[section] = {"check": check_rows, "time": time_rows, "profile": profile_rows,
                    "sweep": sweep_rows, "probe": probe_rows, "ncu": ncu_rows,
                    "unroll": unroll_rows}[section](args)
    with open(os.path.join(args.out, "diag.json"), "w") as f:
      json.dump(doc, f, indent=1)


if __name__ == "__main__":
  main()
