"""Writes the lowered programs of the pallas ops and prune_pack over a grid of methods, patterns,
shapes and batches, to compare two trees: where a change should leave the default path as it was,
the two files are byte-identical (then so is what a GPU compiles from them).

  python scripts/lowered_ops.py --out /tmp/head.txt
  (cd ../base_worktree && python scripts/lowered_ops.py --out /tmp/base.txt)
  cmp /tmp/base.txt /tmp/head.txt
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from absl import app, flags

import nmsparse as nms
from nmsparse.kernels import prune_pack

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Where to write the lowered programs.")
flags.mark_flag_as_required("out")


def prune_pack_programs() -> list[str]:
  out = []
  for shape, (pattern, method, packed), dtype, poison in itertools.product(
      [(40, 24), (24, 56), (3, 3, 8, 16), (512, 256)],
      [("2:8", "bdwp", True), ("2:4", "bimask", True), ("2:8", "srste", False),
       ("1:4", "bdwp", False), ("4:8", "bimask", False), ("2:8", "bdwp", False)],
      [jnp.bfloat16, jnp.float32], [0, 1]):
    fn = lambda w: prune_pack(w, pattern, method, dtype=dtype, packed=packed, poison=poison)
    w = jax.ShapeDtypeStruct(shape, jnp.float32)
    out.append(f"== prune_pack {shape} {pattern} {method} packed={packed} {dtype.__name__} "
               f"poison={poison}\n" + jax.jit(fn).lower(w).as_text())
  return out


def op_programs() -> list[str]:
  out = []
  for method, pattern, op, batch in itertools.product(
      ["bdwp", "srste", "bimask"], ["2:8", "2:4"], ["dense", "conv"], [5, 64]):
    if method == "bimask" and op == "conv":
      continue  # pallas refuses bimask's conv groups
    if op == "dense":
      x, w = jnp.zeros((batch, 32), jnp.bfloat16), jnp.zeros((32, 48), jnp.float32)
      f = lambda x, w: nms.nm_dense(x, w, pattern, method, 0.1, "pallas")
    else:
      x, w = jnp.zeros((2, 8, 8, 16), jnp.bfloat16), jnp.zeros((3, 3, 16, 32), jnp.float32)
      f = lambda x, w: nms.nm_conv(x, w, pattern, method, sr_ste_lambda=0.1,
                                   implementation="pallas")

    def forward_backward(x, w, f=f):
      y, pullback = jax.vjp(f, x, w)
      return pullback(jnp.ones_like(y))

    out.append(f"== {op} {method} {pattern} batch={batch}\n"
               + jax.jit(forward_backward).lower(x, w).as_text())
  return out


def main(argv):
  del argv
  with open(FLAGS.out, "w") as f:
    f.write("\n".join(prune_pack_programs() + op_programs()))


if __name__ == "__main__":
  app.run(main)
