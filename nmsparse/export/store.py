"""Exported trees on disk: the arrays as an Orbax PyTree checkpoint in ``DIR/arrays`` and the
manifest as ``DIR/manifest.json``; restoring rebuilds every packed operand from the manifest."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import traverse_util

from nmsparse.export.tree import FORMAT, FORMAT_VERSION, PACKED, Exported
from nmsparse.pack import PackedNM
from nmsparse.types import NMPattern

ARRAYS = "arrays"
MANIFEST = "manifest.json"


def _to_arrays(exported: Exported) -> dict[str, Any]:
  """The variables as nested dicts of arrays (packed operands as ``{values, positions}``); empty
  collections are left out (the manifest lists the collections)."""
  flat = traverse_util.flatten_dict(exported.variables[PACKED], sep="/")
  packed = {k: {"values": v.values, "positions": v.positions} for k, v in flat.items()}
  tree = {k: v for k, v in exported.variables.items() if k != PACKED and v}
  if packed:
    tree[PACKED] = traverse_util.unflatten_dict(packed, sep="/")
  return tree


def save_exported(path: str, exported: Exported, *, overwrite: bool = False) -> str:
  """Writes ``exported`` to the directory ``path`` (created); returns its absolute path.

  Raises:
    FileExistsError: ``path`` exists and ``overwrite`` is False.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    if not overwrite:
      raise FileExistsError(f"{path} exists; choose a new directory or pass overwrite=True.")
    shutil.rmtree(path)
  os.makedirs(path)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(path, ARRAYS), _to_arrays(exported))
  with open(os.path.join(path, MANIFEST), "w") as f:  # written last: a complete export has it
    json.dump(exported.manifest, f, indent=1)
  return path


def load_exported(path: str) -> Exported:
  """Reads an export written by :func:`save_exported` (arrays bit-exact, manifest equal).

  Raises:
    FileNotFoundError: ``path`` holds no complete export (no manifest or no arrays).
    ValueError: the manifest is of another format or version.
  """
  path = os.path.abspath(path)
  manifest_path, arrays_path = os.path.join(path, MANIFEST), os.path.join(path, ARRAYS)
  for required in (manifest_path, arrays_path):
    if not os.path.exists(required):
      raise FileNotFoundError(f"{path} is no complete nmsparse export: {required} is missing.")
  with open(manifest_path) as f:
    manifest = json.load(f)
  if (manifest.get("format"), manifest.get("format_version")) != (FORMAT, FORMAT_VERSION):
    raise ValueError(f"{manifest_path} is format {manifest.get('format')!r} version "
                     f"{manifest.get('format_version')!r}; this nmsparse reads {FORMAT!r} "
                     f"version {FORMAT_VERSION}.")
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(arrays_path)
  flat = traverse_util.flatten_dict(tree.pop(PACKED, {}), sep="/")
  packed = {}
  for layer, entry in manifest["layers"].items():
    if entry["pattern"] is None:
      continue
    values, positions = flat[layer + "/values"], flat[layer + "/positions"]
    packed[layer] = PackedNM(jnp.asarray(values), jnp.asarray(positions),
                             NMPattern.parse(entry["pattern"]), entry["axis"],
                             entry["shape"][entry["axis"]])
  variables = {name: jax.tree.map(jnp.asarray, tree.get(name, {}))
               for name in manifest["collections"]}
  variables[PACKED] = traverse_util.unflatten_dict(packed, sep="/")
  return Exported(variables, manifest)
