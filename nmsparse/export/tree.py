"""Training variables -> the exported inference tree: packed forward operands of the sparse kernels,
every other variable unchanged, and a JSON manifest (SPEC §5)."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from nmsparse import __version__
from nmsparse.pack import PackedNM, pack, packed_bytes
from nmsparse.prune.mask import check_groupable
from nmsparse.prune.methods import IN_AXIS, ff_mask
from nmsparse.prune.rules import LayerRules, is_kernel
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.types import NMPattern, PatternLike, check_method

FORMAT = "nmsparse-export"
FORMAT_VERSION = 1
PACKED = "packed"  # the collection holding the packed forward operands, by module path
DENSE_ITEMSIZE = 2  # the compression ratio compares against the bf16 dense kernel


@dataclasses.dataclass(frozen=True)
class Exported:
  """An exported model.

  Attributes:
    variables: ``Module.apply`` variables: ``params`` (the training parameters without the sparse
      kernels), ``packed`` (one :class:`~nmsparse.pack.PackedNM` named ``kernel`` per sparse
      layer, at the layer's module path) and the model's other collections (``batch_stats``).
    manifest: JSON-able description (see :func:`export`).
  """

  variables: dict[str, Any]
  manifest: dict[str, Any]

  def operand(self, path: str) -> PackedNM:
    """The packed forward operand of the kernel at ``path`` (``"block0/attn/qkv/kernel"``).

    Raises:
      KeyError: if that kernel was not exported packed (the message lists the packed ones).
    """
    flat = traverse_util.flatten_dict(self.variables[PACKED], sep="/")
    if path not in flat:
      raise KeyError(f"No packed kernel {path!r}; packed kernels: {sorted(flat)}.")
    return flat[path]


def _nested(tree: Any) -> dict[str, Any]:
  return flax.core.unfreeze(tree) if isinstance(tree, flax.core.FrozenDict) else dict(tree)


def _snapshots(variables: Mapping[str, Any]) -> dict[str, jax.Array]:
  """``mask_every > 1``: kernel path -> the ``nm_masks`` snapshot the FF mask comes from."""
  flat = traverse_util.flatten_dict(_nested(variables.get(MASK_COLLECTION, {})), sep="/")
  suffix = "/kernel_snapshot"
  return {k[:-len(suffix)] + "/kernel": v for k, v in flat.items() if k.endswith(suffix)}


@functools.partial(jax.jit, static_argnames=("pattern", "dtype"))
def _pack_ff(w: jax.Array, src: jax.Array, pattern: NMPattern,
             dtype: Any) -> tuple[PackedNM, jax.Array]:
  """The packed ``W * M_ff`` (``M_ff`` from ``src``) and ``M_ff``, in one compiled pass."""
  mask = ff_mask(src, pattern)
  return pack(w, mask, pattern, axis=IN_AXIS, dtype=dtype), mask


def _check_pruned(path: str, w: jax.Array, mask: jax.Array, pattern: NMPattern) -> None:
  """Raises unless ``w`` is its own forward operand (no nonzero weight outside ``mask``)."""
  outside = np.asarray(jnp.where(mask, 0, w) != 0)
  if not outside.any():
    return
  axis = w.ndim + IN_AXIS
  nonzero = np.moveaxis(np.asarray(w != 0), axis, -1)
  per_group = nonzero.reshape(nonzero.shape[:-1] + (-1, pattern.m)).sum(-1)
  bad = np.moveaxis(outside, axis, -1).reshape(per_group.shape + (pattern.m,)).any(-1)
  raise ValueError(
      f"Kernel {path!r} of shape {tuple(w.shape)} is not {pattern} along its input axis {axis}: "
      f"{int(bad.sum())} of {bad.size} groups of {pattern.m} hold nonzero weights outside the "
      f"forward mask (up to {int(per_group.max())} nonzero where {pattern.n} are allowed). Export "
      "with require_pruned=False to prune it with M_ff, or keep the layer dense with a layer rule.")


def _layer_entry(path: str, w: jax.Array, pattern: NMPattern | None,
                 packed: PackedNM | None) -> dict[str, Any]:
  entry = {"kind": "dense" if w.ndim == 2 else "conv", "shape": list(w.shape),
           "pattern": None if pattern is None else str(pattern)}
  if packed is not None:
    itemsize = jnp.dtype(packed.values.dtype).itemsize
    entry.update(axis=packed.axis, values_shape=list(packed.values.shape),
                 positions_shape=list(packed.positions.shape),
                 packed_bytes=packed_bytes(tuple(w.shape), pattern, IN_AXIS, itemsize),
                 dense_bf16_bytes=int(np.prod(w.shape)) * DENSE_ITEMSIZE)
  return entry


def compression(manifest: Mapping[str, Any]) -> dict[str, float]:
  """Bytes of the packed kernels, their bf16 dense bytes and the ratio (packed / dense)."""
  packed = [e for e in manifest["layers"].values() if e["pattern"] is not None]
  got = sum(e["packed_bytes"] for e in packed)
  dense = sum(e["dense_bf16_bytes"] for e in packed)
  return {"packed_bytes": got, "dense_bf16_bytes": dense,
          "ratio": got / dense if dense else 1.0, "sparse_layers": len(packed)}


def export(variables: Mapping[str, Any],
           rules: LayerRules | Sequence[tuple[str, PatternLike | None]], method: str, *,
           dtype: Any = jnp.bfloat16, require_pruned: bool = False,
           source: Mapping[str, Any] | None = None, git_sha: str | None = None) -> Exported:
  """Packs the forward operand ``W * M_ff`` of every sparse kernel; keeps everything else.

  Args:
    variables: the training model's ``apply`` variables: ``params`` and, where the model has them,
      ``batch_stats`` (kept) and ``nm_masks`` (``mask_every > 1``: the FF masks come from its
      kernel snapshots, as in evaluation; not exported).
    rules: the layer rules (a :class:`LayerRules` or its ``[(regex, pattern), ...]``); a kernel is
      sparse when its rule gives a pattern and ``method`` is not ``dense``.
    method: the training method (SPEC §1); every sparse method's forward operand is ``W * M_ff``.
    dtype: the compute dtype of the packed values (the products run in it).
    require_pruned: the kernels should already be their forward operands (e.g. trained with hard
      masks); a nonzero weight outside ``M_ff`` is an error instead of being pruned.
    source: JSON-able description of where the weights come from (checkpoint path, step, config).
    git_sha: the exporting code's commit, recorded in the manifest.

  Returns:
    The :class:`Exported` tree. Its manifest holds the format and version, ``method``, ``dtype``,
    ``rules``, the variable ``collections``, one entry per kernel under ``layers`` (kind, shape, pattern; for packed ones also the
    axis, packed shapes and bytes), ``compression`` (:func:`compression`), ``source``,
    ``nmsparse_version``, ``jax_version`` and ``git_sha``.

  Raises:
    ValueError: an unknown method; a sparse kernel whose input axis does not divide by M; with
      ``require_pruned``, a kernel that is not N:M along its input axis (each names the kernel,
      its shape and the pattern).
    TypeError: a ``source`` that is not JSON-able.
  """
  check_method(method)
  rules = LayerRules.create(rules)
  if "params" not in variables:
    raise ValueError(f"export takes the model's apply variables ({{'params': ...}}); got the "
                     f"collections {sorted(variables)}.")
  snapshots = _snapshots(variables)
  flat = traverse_util.flatten_dict(_nested(variables["params"]), sep="/")
  params, packed, layers = {}, {}, {}
  for path, w in flat.items():
    if not is_kernel(path, w):
      params[path] = w
      continue
    pattern = None if method == "dense" else rules.pattern_for(path)
    if pattern is None:
      params[path] = w
      layers[path] = _layer_entry(path, w, None, None)
      continue
    w = jnp.asarray(w)
    if method == "bimask" and w.ndim == 4:
      raise ValueError(
          f"Kernel {path!r} of shape {tuple(w.shape)}: bimask groups a conv kernel's forward mask "
          f"along the flattened (C, kh, kw) axis (SPEC §1), which the packed format (groups of "
          f"{pattern.m} along C for every tap) cannot hold; export bimask models with dense "
          "kernels only, or keep this layer dense with a layer rule.")
    check_groupable(w.shape, IN_AXIS, pattern, what=f"kernel {path!r}")
    packed[path], mask = _pack_ff(w, jnp.asarray(snapshots.get(path, w)), pattern,
                                  jnp.dtype(dtype))
    if require_pruned:
      _check_pruned(path, w, mask, pattern)
    layers[path] = _layer_entry(path, w, pattern, packed[path])
  out = {k: _nested(v) for k, v in variables.items() if k not in ("params", MASK_COLLECTION)}
  out["params"] = traverse_util.unflatten_dict(params, sep="/")
  out[PACKED] = traverse_util.unflatten_dict(packed, sep="/")
  manifest = {
      "format": FORMAT, "format_version": FORMAT_VERSION, "method": method,
      "dtype": jnp.dtype(dtype).name,
      "rules": [[regex, None if p is None else str(p)] for regex, p in rules.rules],
      "collections": sorted(out), "layers": layers, "source": dict(source or {}), "nmsparse_version": __version__,
      "jax_version": jax.__version__, "git_sha": git_sha,
  }
  manifest["compression"] = compression(manifest)
  try:
    manifest = json.loads(json.dumps(manifest))  # JSON-normal: it reads back equal
  except TypeError as e:
    raise TypeError(f"export: source={source!r} is not JSON-able ({e}).") from e
  return Exported(out, manifest)

