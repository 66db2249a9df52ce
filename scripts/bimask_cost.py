"""What Bi-Mask's masks and permutation search cost next to BDWP's, on whatever device JAX has.

Two measurements, written as one JSON (device, JAX version, git SHA):
* ``masks``: one kernel's BP mask (``bp_mask``) for bdwp and bimask, and bimask's mapping of the
  permuted mask back to the kernel's order done both ways: the scatter to ``perm`` the code uses
  and a gather with the inverse permutation (the earlier code), median of ``--repeats`` calls.
* ``steps``: a config's train step (``make_batch_train_step``, one fixed batch) for bdwp, bimask
  with the search in every step (``bimask_search="every_call"``) and bimask's ordinary step under
  ``"marked_calls"`` (no search; the runner adds one search step per ``bimask_refresh``).

  python scripts/bimask_cost.py --out results/bimask_cpu.json
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.config_io import apply_overrides, load_config
from nmsparse.prune.mask import nm_mask
from nmsparse.prune.methods import OUT_AXIS, bp_mask, ff_mask
from nmsparse.train.metrics import device_name, git_sha, write_json
from nmsparse.train.parallel import make_mesh, put_replicated
from nmsparse.train.setup import build_model, build_rules, create_state
from nmsparse.train.step import make_batch_train_step
from nmsparse.types import NMPattern

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/vgg19_cifar10.py", "Config of the timed train steps.")
flags.DEFINE_string("pattern", "2:8", "N:M pattern.")
flags.DEFINE_string("kernel", "3,3,512,512", "Kernel shape (HWIO or [K, O]) of the mask timings.")
flags.DEFINE_integer("batch", 32, "Train-step batch.")
flags.DEFINE_string("dtype", "float32", "Train-step compute dtype.")
flags.DEFINE_integer("repeats", 10, "Timed calls per mask measurement.")
flags.DEFINE_integer("steps", 5, "Timed train steps per method.")
flags.DEFINE_string("out", "", "Write the JSON here.")


def median_ms(f, *args, repeats: int) -> float:
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append((time.perf_counter() - t) * 1e3)
  return statistics.median(times)


def gathered_back(w, pattern, perm):
  """bimask's BP mask with the permuted mask mapped back by a gather (the earlier code)."""
  m_ff = ff_mask(w, pattern, "bimask")
  w_s = jnp.where(m_ff, w, jnp.zeros((), w.dtype))
  m_b = nm_mask(jnp.take(w_s, perm, axis=OUT_AXIS), pattern, axis=OUT_AXIS)
  inverse = jnp.zeros_like(perm).at[perm].set(jnp.arange(perm.shape[0], dtype=perm.dtype))
  return m_ff & jnp.take(m_b, inverse, axis=OUT_AXIS)


def mask_rows(pattern: NMPattern, shape: tuple[int, ...]) -> list[dict]:
  w = jax.random.normal(jax.random.key(0), shape)
  perm = jax.random.permutation(jax.random.key(1), shape[-1]).astype(jnp.int32)
  fns = {"bdwp bp_mask": jax.jit(lambda w, q: bp_mask(w, pattern, "bdwp")),
         "bimask bp_mask (scatter back)": jax.jit(lambda w, q: bp_mask(w, pattern, "bimask", q)),
         "bimask bp_mask (gather back)": jax.jit(lambda w, q: gathered_back(w, pattern, q))}
  same = bool(jnp.array_equal(fns["bimask bp_mask (scatter back)"](w, perm),
                              fns["bimask bp_mask (gather back)"](w, perm)))
  return [{"what": k, "shape": list(shape), "ms": median_ms(f, w, perm, repeats=FLAGS.repeats),
           "same_mask": same} for k, f in fns.items()]


def step_rows() -> list[dict]:
  rows = []
  for method, search in (("bdwp", "every_call"), ("bimask", "every_call"),
                         ("bimask", "marked_calls")):
    config = apply_overrides(load_config(FLAGS.config),
                             {"method": method, "pattern": FLAGS.pattern, "dtype": FLAGS.dtype,
                              "bimask_search": search})
    model = build_model(config, build_rules(config))
    size = config.data.image_size
    shape = (size, size, config.data.channels)
    state, _ = create_state(config, model, shape, 10, jax.random.key(0))
    mesh = make_mesh(1)
    state = put_replicated(jax.device_get(state), mesh)
    step = make_batch_train_step(model, mesh, config.data.num_classes, config.label_smoothing)
    x = jnp.ones((FLAGS.batch,) + shape, jnp.float32)
    y = jnp.zeros((FLAGS.batch,), jnp.int32)
    state, metrics = step(state, x, y)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(FLAGS.steps):
      t = time.perf_counter()
      state, metrics = step(state, x, y)
      jax.block_until_ready(metrics)
      times.append((time.perf_counter() - t) * 1e3)
    rows.append({"config": config.name, "method": method, "bimask_search": search,
                 "searches": method == "bimask" and search == "every_call",
                 "batch": FLAGS.batch, "dtype": FLAGS.dtype,
                 "step_ms": statistics.median(times)})
    print(f"{method:6s} {search:12s} {rows[-1]['step_ms']:9.1f} ms/step", flush=True)
  return rows


def main(argv):
  del argv
  pattern = NMPattern.parse(FLAGS.pattern)
  shape = tuple(int(s) for s in FLAGS.kernel.split(","))
  masks = mask_rows(pattern, shape)
  for r in masks:
    print(f"{r['what']:32s} {r['ms']:8.2f} ms  (same mask: {r['same_mask']})", flush=True)
  doc = {"meta": {"device": device_name(), "jax_version": jax.__version__, "git_sha": git_sha(),
                  "pattern": FLAGS.pattern, "config": FLAGS.config},
         "masks": masks, "steps": step_rows() if FLAGS.steps else []}
  if FLAGS.out:
    write_json(FLAGS.out, doc)


if __name__ == "__main__":
  app.run(main)
