"""Bi-Mask's permutation search: the output-axis order of a ``bimask`` layer's backward mask.

The refresh rule (SPEC §1): a training call with ``count % bimask_refresh == 0`` replaces the
permutation, before use, by the best of ``bimask_candidates`` random ones. It runs with no control
flow: the candidates are one sort of random keys, they are scored together (``vmap``), and the
refresh picks with ``jnp.where``. On a GPU an XLA conditional or loop outside a command buffer
(XLA's default enables neither) copies its predicate to the host and waits for the stream, once per
layer and step; an earlier ``lax.cond`` / ``lax.map`` version ran VGG19's 16 layers at 25 s an epoch
where the other methods took 1.6-2.9 s, sharing one H200 (``scripts/gpu_table.sh``, three runs at a
time).

Where the search is computed is the layer's ``bimask_search`` (:data:`SEARCH_MODES`):

* ``"every_call"`` (the layers' default, right for any caller): every training call computes the
  search and the rule selects it or keeps the stored permutation. Its arithmetic then runs on every
  call, not every ``refresh``-th: a VGG19 run (git f532f65, 10 candidates, refresh 100) took 12 s
  an epoch alone on an H200, where bdwp 2:8 took 2.4 s sharing it with another run.
* ``"marked_calls"``: only a training call that also makes :data:`SEARCH_COLLECTION` mutable
  computes the search (and still applies the rule); any other call keeps the stored permutation.
  The caller must mark every call whose count is a multiple of ``refresh``; the runner compiles a
  second train step for those (``nmsparse.train.loop``), and its check that every count equals the
  step makes the two agree. The result is the rule's, computed on 1 call in ``refresh``.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nmsparse.prune.methods import bimask_backward, ff_mask
from nmsparse.types import NMPattern

# Bi-Mask's CIFAR defaults (CnnModels/utils/options.py: --greedy_num 10, --iter 100).
DEFAULT_CANDIDATES = 10
DEFAULT_REFRESH = 100
# The collection a training call makes mutable to mark itself as a search call (it holds nothing).
SEARCH_COLLECTION = "nm_search"
SEARCH_MODES = ("every_call", "marked_calls")
DEFAULT_SEARCH = "every_call"  # the layers' default: right for any caller


def check_bimask_settings(candidates: int, refresh: int, name: str | None = None,
                          search: str = DEFAULT_SEARCH) -> None:
  """Raises ``ValueError`` unless ``candidates`` and ``refresh`` are integers >= 1 and ``search``
  is one of :data:`SEARCH_MODES` (the message names the field and layer)."""
  where = "" if name is None else f" of layer {name!r}"
  for field, value in (("bimask_candidates", candidates), ("bimask_refresh", refresh)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{field}{where} must be an integer >= 1, got {value!r}.")
  if search not in SEARCH_MODES:
    raise ValueError(f"bimask_search{where} must be one of {list(SEARCH_MODES)}, got {search!r}.")


def kept_count(w: jax.Array, pattern: NMPattern, perm: jax.Array) -> jax.Array:
  """How many weights the backward mask keeps with output order ``perm`` (Bi-Mask's score)."""
  m_ff = ff_mask(w, pattern, "bimask")
  return jnp.sum(bimask_backward(w, m_ff, pattern, perm), dtype=jnp.int32)


def candidate_permutations(key: jax.Array, features: int, candidates: int) -> jax.Array:
  """``candidates`` random permutations of ``range(features)`` as int32 ``[candidates, features]``:
  each row sorts iid 32-bit keys (stable, one sort and no loop; ``jax.random.permutation`` runs
  rounds of a loop)."""
  bits = jax.random.bits(key, (candidates, features), jnp.uint32)
  return jnp.argsort(bits, axis=-1, stable=True).astype(jnp.int32)


def best_of(w: jax.Array, pattern: NMPattern, perms: jax.Array) -> jax.Array:
  """The first row of ``perms`` whose backward mask keeps the most weights (``M_ff * M_b``
  summed; Bi-Mask's score, first maximum as its strict ``>``)."""
  w = lax.stop_gradient(w)
  m_ff = ff_mask(w, pattern, "bimask")
  counts = jax.vmap(
      lambda p: jnp.sum(bimask_backward(w, m_ff, pattern, p), dtype=jnp.int32))(perms)
  return perms[jnp.argmax(counts)]


def best_permutation(w: jax.Array, pattern: NMPattern, key: jax.Array,
                     candidates: int) -> jax.Array:
  """Bi-Mask's search: :func:`best_of` ``candidates`` random permutations of the output axis."""
  return best_of(w, pattern, candidate_permutations(key, w.shape[-1], candidates))


def layer_key(seed: int, name: str) -> jax.Array:
  """The permutation draws' key of one layer: ``seed`` folded with a hash of its name."""
  return jax.random.fold_in(jax.random.key(seed), np.uint32(zlib.crc32(name.encode())))


def refresh_permutation(w: jax.Array, perm: jax.Array, count: jax.Array, pattern: NMPattern,
                        refresh: int, candidates: int, key: jax.Array) -> jax.Array:
  """One training call of the refresh rule: a new :func:`best_permutation` of ``w`` (drawn with
  ``key`` folded with ``count``) when ``count % refresh == 0``, else ``perm`` (selected, not
  branched: the module docstring says why)."""
  best = best_permutation(w, pattern, jax.random.fold_in(key, count), candidates)
  return jnp.where(count % refresh == 0, best, perm)


def identity_permutation(features: int) -> jax.Array:
  """The initial permutation, ``arange(features)`` as int32."""
  return jnp.arange(features, dtype=jnp.int32)
