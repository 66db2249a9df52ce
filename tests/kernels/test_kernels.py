"""One suite for every kernel: Pallas interpreter on CPU (a CI subset) and compiled on a GPU (all).

Each case draws fresh random inputs, runs the kernel with its outputs pre-filled with poison (NaN,
or byte patterns; twice with different bytes for prune_pack) and compares with the kernel file's
``reference_<name>``: bit-exact for ``prune_pack`` (pure selection), within ``tolerance`` for the
matmuls. ``compiled`` cases skip off-GPU with the reason shown.
"""

from __future__ import annotations

import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmsparse.kernels import (nm_matmul, nm_matmul_t, prune_pack, reference_nm_matmul,
                              reference_nm_matmul_t, reference_prune_pack)
from nmsparse.kernels.shapes import CI
from nmsparse.pack import pack_nm
from nmsparse.kernels import force_interpret
from nmsparse.testing.tolerance import assert_close

PATTERNS = ("1:4", "2:4", "2:8", "4:8", "1:8")
DTYPES = ("float32", "bfloat16")
ON_GPU = jax.default_backend() == "gpu"


def _rng(*key) -> np.random.Generator:
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _modes(full, ci):
  """``compiled`` runs ``full`` (GPU only), ``interpret`` the CI subset ``ci``."""
  params = [pytest.param("interpret", *c, id="interpret-" + "-".join(map(str, c))) for c in ci]
  params += [pytest.param("compiled", *c, id="compiled-" + "-".join(map(str, c)),
                          marks=pytest.mark.skipif(not ON_GPU, reason="compiled Pallas (Triton) "
                                                   "needs a GPU; the backend here is "
                                                   f"{jax.default_backend()}"))
             for c in full]
  return params


# prune_pack ---------------------------------------------------------------------------------------
PRUNE_FULL = [(p, d, meth, packed, CI[i % len(CI)].name) for i, (p, d, meth, packed) in enumerate(
    (p, d, meth, packed) for p, d, meth, packed in itertools.product(
        PATTERNS, DTYPES, ("bdwp", "bimask", "srste"), (True, False))
    if not (packed and meth == "srste"))]
PRUNE_CI = [
    ("1:4", "bfloat16", "bdwp", True, "odd_40x24"),
    ("2:4", "float32", "bdwp", True, "odd_24x56"),
    ("2:8", "bfloat16", "bimask", True, "odd_40x24"),
    ("4:8", "bfloat16", "bdwp", True, "odd_40x24"),
    ("1:8", "float32", "bdwp", True, "odd_24x56"),
    ("2:4", "bfloat16", "srste", False, "odd_40x24"),
    ("2:8", "float32", "bdwp", False, "conv_3x3_8x16"),
]


def _shape(name):
  return next(s for s in CI if s.name == name)


@pytest.mark.parametrize("mode, pattern, dtype, method, packed, shape",
                         _modes(PRUNE_FULL, PRUNE_CI))
def test_prune_pack(mode, pattern, dtype, method, packed, shape):
  w_shape = _shape(shape).weight_shape
  w = jnp.asarray(_rng(pattern, dtype, method, packed, shape).standard_normal(w_shape), jnp.float32)
  want = reference_prune_pack(w, pattern, method, dtype=jnp.dtype(dtype), packed=packed)
  for poison in (1, 2):
    with force_interpret(mode == "interpret"):
      got = prune_pack(w, pattern, method, dtype=jnp.dtype(dtype), packed=packed, poison=poison)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, r.shape, g.dtype, r.dtype)
      np.testing.assert_array_equal(np.asarray(g.astype(jnp.float32)),
                                    np.asarray(r.astype(jnp.float32)), err_msg=f"poison={poison}")


SUBNORMAL_CASES = [("2:8", "bdwp", True), ("2:4", "bimask", True), ("1:4", "bdwp", False),
                   ("2:8", "srste", False)]


@pytest.mark.parametrize("mode, pattern, method, packed", _modes(SUBNORMAL_CASES, SUBNORMAL_CASES))
def test_prune_pack_ranks_subnormals_exactly(mode, pattern, method, packed):
  # Float compares flush subnormals to zero on CPU and GPU; the kernel ranks integer magnitude
  # keys, so a subnormal beats a zero (and a smaller subnormal) exactly as nm_mask says.
  rng = _rng("subnormal", pattern, method, packed)
  choices = np.array([0.0, -0.0, 1e-45, -3e-45, 2.5e-41, -1.1e-38, 1.0], np.float32)
  w = jnp.asarray(rng.choice(choices, size=(32, 48)))
  want = reference_prune_pack(w, pattern, method, dtype=jnp.float32, packed=packed)
  with force_interpret(mode == "interpret"):
    got = prune_pack(w, pattern, method, dtype=jnp.float32, packed=packed)
  tiny = np.finfo(np.float32).tiny
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, r = np.asarray(g), np.asarray(r)
    if g.dtype == np.float32:  # kept values: either side may flush a subnormal value (FTZ adds)
      g, r = (np.where(np.abs(a) < tiny, 0.0, a) for a in (g, r))
    np.testing.assert_array_equal(g, r)  # positions and keep bits: exact


SOURCE_FULL = [(p, meth, packed, ("odd_40x24", "odd_24x56", "conv_3x3_8x16")[i % 3])
               for i, (p, meth, packed) in enumerate(itertools.product(
                   PATTERNS, ("bdwp", "bimask", "srste"), (True, False)))
               if not (packed and meth == "srste")]
SOURCE_CI = [("2:8", "bdwp", True, "odd_40x24"), ("2:4", "bimask", False, "odd_24x56"),
             ("2:8", "srste", False, "conv_3x3_8x16"), ("1:4", "bdwp", False, "conv_3x3_8x16")]


@pytest.mark.parametrize("mode, pattern, method, packed, shape", _modes(SOURCE_FULL, SOURCE_CI))
def test_prune_pack_ranks_a_given_source(mode, pattern, method, packed, shape):
  # mask_every > 1: masks from a snapshot's magnitudes, values from the current weight.
  w_shape = _shape(shape).weight_shape
  rng = _rng("source", pattern, method, packed, shape)
  w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  src = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  want = reference_prune_pack(w, pattern, method, packed=packed, source=src)
  own = reference_prune_pack(w, pattern, method, packed=packed)
  as_np = lambda a: np.asarray(a.astype(jnp.float32))
  assert any(not np.array_equal(as_np(a), as_np(b))  # the source matters
             for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(own)))
  for poison in (1, 2):
    with force_interpret(mode == "interpret"):
      got = prune_pack(w, pattern, method, packed=packed, poison=poison, source=src)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, r.shape, g.dtype, r.dtype)
      np.testing.assert_array_equal(as_np(g), as_np(r), err_msg=f"poison={poison}")


def test_prune_pack_rejects_unsupported():
  w = jnp.ones((12, 12))
  with pytest.raises(ValueError, match="M in \\(2, 4, 8\\)"):
    prune_pack(w, "2:6")
  with pytest.raises(ValueError, match="no packed BP form"):
    prune_pack(jnp.ones((8, 8)), "2:4", "srste", packed=True)
  with pytest.raises(ValueError, match="output-channel axis"):
    prune_pack(jnp.ones((8, 12)), "2:8", "bdwp")
  with pytest.raises(ValueError, match="shaped like the weight"):
    prune_pack(jnp.ones((8, 8)), "2:4", source=jnp.ones((8, 4)))


# nm_matmul / nm_matmul_t --------------------------------------------------------------------------
MATMUL_FULL = [(p, d, b, ("odd_40x24", "odd_24x56")[i % 2]) for i, (p, d, b) in enumerate(
    itertools.product(PATTERNS, DTYPES, (1, 16, 37)))]
MATMUL_CI = [
    ("1:4", "float32", 5, "odd_40x24"),
    ("2:4", "bfloat16", 37, "odd_24x56"),
    ("2:8", "bfloat16", 1, "odd_40x24"),
    ("4:8", "float32", 16, "odd_24x56"),
    ("1:8", "bfloat16", 5, "odd_24x56"),
]


@pytest.mark.parametrize("mode, pattern, dtype, batch, shape", _modes(MATMUL_FULL, MATMUL_CI))
@pytest.mark.parametrize("direction", ["ff", "bp"])
def test_nm_matmul(mode, pattern, dtype, batch, shape, direction):
  s = _shape(shape)
  rng = _rng(pattern, dtype, batch, shape, direction)
  w = jnp.asarray(rng.standard_normal((s.k, s.o)), jnp.float32)
  dtype = jnp.dtype(dtype)
  if direction == "ff":
    op, ref, axis, red = nm_matmul, reference_nm_matmul, 0, s.k
  else:
    op, ref, axis, red = nm_matmul_t, reference_nm_matmul_t, 1, s.o
  packed = pack_nm(w, pattern, axis, dtype)
  x = jnp.asarray(rng.standard_normal((batch, red)), dtype)
  want = ref(x, packed)
  with force_interpret(mode == "interpret"):
    raw = op(x, packed, poison=1)
    got = op(x, packed)
  assert np.all(np.isfinite(np.asarray(raw, np.float32))), "unwritten (NaN-poisoned) outputs"
  assert got.shape == want.shape and got.dtype == dtype
  assert_close(got, np.asarray(want.astype(jnp.float32)), dtype, red, f"{direction} {pattern}")
  partial_sum = jnp.sum(raw.astype(jnp.float32), axis=0)[:batch, :want.shape[1]]
  assert_close(partial_sum, np.asarray(want.astype(jnp.float32)), dtype, red, "partial sums")
