"""Running a model from its exported tree: dense/conv layers that read a packed forward operand,
swapped into the model through its injectable ``dense``/``conv`` fields, and the one-time load step
(:func:`materialize`) that lays each sparse kernel out for the path it serves on."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from nmsparse.export.tree import PACKED, Exported
from nmsparse import native
from nmsparse.kernels import nm_matmul, reference_nm_matmul
from nmsparse.kernels import sparse_tc, value_serial
from nmsparse.layer_args import conv_layer_args, flatten_images
from nmsparse.ops.cards import CardRule, decode_choice
from nmsparse.ops.config import ConvDims
from nmsparse.ops.pallas import KERNEL_M
from nmsparse.pack import PackedNM, unpack

NATIVE = "native"  # materialize's collection for value_serial.blocked_matmul (BlockedNM)
TILED = "tiled"  # materialize's collection of operands for value_serial.tiled_matmul (TiledNM)
SPARSE_TC = "sparse_tc"  # materialize's collection of CompressedFF operands (cuSPARSELt)
IMPLEMENTATIONS = ("native", "tiled", "sparse_tc", "packed", "dense")  # materialize's paths


@flax.struct.dataclass
class CompressedFF:
  """A dense layer's forward operand for the 2:4 sparse tensor cores: ``(W * M_ff)^T [O, K]`` in
  cuSPARSELt's compressed bytes (``sparse_tc.lib_compress``; any N <= 2, M a multiple of 4 is
  2:4-structured), ``shape`` the kernel's ``(K, O)``."""

  data: jax.Array
  shape: tuple[int, int] = flax.struct.field(pytree_node=False)


def sparse_tc_unsupported(dtype, ff: PackedNM) -> str | None:
  """``None`` if the sparse tensor cores can run ``ff`` in ``dtype``, else why not."""
  if jnp.dtype(dtype) != jnp.bfloat16:
    return f"the sparse tensor-core path computes in bfloat16, not {jnp.dtype(dtype).name}"
  if ff.pattern.n > 2 or ff.pattern.m % 4:
    return f"2:4 sparse tensor cores take N <= 2 and M a multiple of 4, not {ff.pattern}"
  k, o = ff.shape
  return sparse_tc.eligible_shape(o, k)


def compress_ff(ff: PackedNM) -> CompressedFF:
  """``ff`` (a packed ``[K, O]`` dense kernel) as a :class:`CompressedFF` (needs the extension)."""
  native.library("the sparse tensor-core serving path (implementation='sparse_tc')")
  return CompressedFF(sparse_tc.lib_compress(unpack(ff).T), tuple(ff.shape))


def sparse_tc_matmul(x: jax.Array, operand: CompressedFF) -> jax.Array:
  """``x [rows, K] @ W`` on the sparse tensor cores (``sparse_tc.spmm``)."""
  k, o = operand.shape
  return sparse_tc.spmm(operand.data, x, o, k)


def decode_path(k: int, o: int, pattern, rows: int, rule: CardRule | None = None,
                dtype=jnp.bfloat16) -> str:
  """The path ``implementation=None`` takes for ``x [rows, k] @ W [k, o]`` of an exported layer:
  ``"native"`` (the CUDA-core kernel ``value_serial.vs_matmul`` on the packed operand) or
  ``"tiled"`` (the pipelined tensor-core kernel ``value_serial.tiled_matmul`` on the
  ``prepare``-d one) where the card (``rule``, default this one's: ``nmsparse/ops/cards.py``,
  ``decode_choice``) measured it faster than dense at this shape, pattern and row count and the
  extension is loaded, else ``"dense"``."""
  choice = decode_choice(k, o, pattern, rows, rule)
  if choice == "dense" or jnp.dtype(dtype) != jnp.bfloat16:
    return "dense"
  return choice if native.status() is None else "dense"


def _over_rows(matmul: Any, x: jax.Array, operand: Any) -> jax.Array:
  """``matmul`` of ``[rows, K]`` activations applied to ``[..., K]`` ones (``operand`` [K, O])."""
  y = matmul(x.reshape(-1, x.shape[-1]), operand)
  return y.reshape(x.shape[:-1] + (operand.shape[1],))


def packed_matmul(x: jax.Array, packed: PackedNM) -> jax.Array:
  """``x @ unpack(packed)`` for ``[..., K]`` activations: the native value-serial kernel where
  :func:`decode_path` says ``"native"``; else the Pallas ``nm_matmul`` kernel (interpreted
  off-GPU) for ``M in (2, 4, 8)``, its jnp reference for other M."""
  rows = int(np.prod(x.shape[:-1]))
  k, o = packed.shape
  if (decode_path(k, o, packed.pattern, rows, dtype=x.dtype) == "native"
      and value_serial.unsupported(x.dtype, packed) is None):
    matmul = value_serial.vs_matmul
  else:
    matmul = nm_matmul if packed.pattern.m in KERNEL_M else reference_nm_matmul
  return _over_rows(matmul, x, packed)


class _PackedMixin:
  """The packed (or tiled) operand of this layer, if the exported variables hold one."""

  def packed_operand(self, in_features: int, ndim: int, collection: str = PACKED) -> Any:
    """``<collection>/<module path>/kernel`` (a :class:`~nmsparse.pack.PackedNM`, for
    :data:`TILED` a ``value_serial.TiledNM``, for :data:`NATIVE` a ``value_serial.BlockedNM``)
    checked against the layer, or ``None``."""
    if not self.has_variable(collection, "kernel"):
      return None
    operand = self.get_variable(collection, "kernel")
    shape = tuple(operand.shape)
    if len(shape) != ndim or shape[-2:] != (in_features, self.features):
      path = "/".join(self.path)
      raise ValueError(f"Layer {path!r} takes {in_features} input features to {self.features} "
                       f"outputs (a rank-{ndim} kernel), but its {collection} kernel has shape "
                       f"{shape}: the exported tree belongs to another model.")
    return operand


class PackedDense(_PackedMixin, nn.Dense):
  """``nn.Dense`` for exported models: a kernel in :data:`NATIVE` runs
  ``value_serial.blocked_matmul``,
  one in :data:`TILED` ``value_serial.tiled_matmul``, one in :data:`SPARSE_TC`
  :func:`sparse_tc_matmul` (:func:`materialize` puts them there), a packed one
  :func:`packed_matmul`, each in the operand values' dtype (bf16 for the sparse tensor cores),
  plus the stock ``bias``; without any, it is ``nn.Dense``."""

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    in_features = jnp.shape(inputs)[-1]
    for collection, matmul in ((NATIVE, value_serial.blocked_matmul),
                               (TILED, value_serial.tiled_matmul),
                               (SPARSE_TC, sparse_tc_matmul), (PACKED, packed_matmul)):
      operand = self.packed_operand(in_features, 2, collection)
      if operand is not None:
        break
    else:
      return super().__call__(inputs)
    dtype = jnp.bfloat16 if collection == SPARSE_TC else operand.values.dtype
    x = jnp.asarray(inputs, dtype)
    y = matmul(x, operand) if collection == PACKED else _over_rows(matmul, x, operand)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, dtype)
    return y


class PackedConv(_PackedMixin, nn.Conv):
  """``nn.Conv`` (2-D, NHWC) for exported models: a packed HWIO kernel is unpacked to the masked
  kernel ``W * M_ff`` (in the values' dtype) and fed to ``lax.conv``; without one it is ``nn.Conv``.

  The value-serial saving is for dense products at small batch: a conv reads its unpacked kernel.
  """

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    packed = self.packed_operand(jnp.shape(inputs)[-1], 4)
    if packed is None:
      return super().__call__(inputs)
    name = "/".join(self.path)
    args = conv_layer_args(name, self.kernel_size, self.strides, self.padding,
                           self.kernel_dilation, self.input_dilation, self.feature_group_count,
                           shared_weights=self.shared_weights, mask=self.mask)
    x, restore_batch = flatten_images(inputs)
    kernel = unpack(packed)
    dtype = kernel.dtype
    if kernel.shape[:2] != args.kernel_size:
      raise ValueError(f"Conv {name!r} has kernel_size {args.kernel_size}, but its packed kernel "
                       f"has shape {kernel.shape}: the exported tree belongs to another model.")
    dims = ConvDims.create(x.shape, kernel.shape, args.strides, args.padding, args.kernel_dilation)
    y = dims.conv(jnp.asarray(x, dtype), kernel)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, dtype)
    return restore_batch(y)


def _swap(layer: Any, replacement: type[nn.Module], stock: type[nn.Module]) -> Any:
  """``replacement`` with the stock settings (dtype, param_dtype, ...) the injected layer carries."""
  fields = {f.name for f in dataclasses.fields(stock)}
  kwargs = layer.keywords if isinstance(layer, functools.partial) else {}
  return functools.partial(replacement, **{k: v for k, v in kwargs.items() if k in fields})


def inference_model(model: nn.Module) -> nn.Module:
  """``model`` with its injected ``dense``/``conv`` layers replaced by :class:`PackedDense` /
  :class:`PackedConv` carrying the same stock settings; parameter paths stay the same.

  Raises:
    ValueError: if the model has no ``dense`` or ``conv`` field (see ``nmsparse.models``).
  """
  missing = [f for f in ("dense", "conv") if not hasattr(model, f)]
  if missing:
    raise ValueError(f"{type(model).__name__} has no injectable {' or '.join(missing)} layer "
                     "field; exported models run through the nmsparse.models interface.")
  return model.clone(dense=_swap(model.dense, PackedDense, nn.Dense),
                     conv=_swap(model.conv, PackedConv, nn.Conv))


def apply(model: nn.Module, exported: Exported | Mapping[str, Any], *args: Any,
          **kwargs: Any) -> Any:
  """Runs ``model`` (the training model, or one built the same way) from ``exported`` (an
  :class:`Exported` or its ``variables``, e.g. as an argument of a jitted function):
  ``inference_model(model).apply(variables, *args, **kwargs)``; pass ``train=False`` to
  ``nmsparse.models``. Outputs equal the masked dense model's within the shared tolerance."""
  variables = exported.variables if isinstance(exported, Exported) else exported
  return inference_model(model).apply(variables, *args, **kwargs)


def _serving_path(layer: str, ff: PackedNM, rows: int, implementation: str | None) -> str:
  """The path :func:`materialize` gives the packed kernel of ``layer`` (logged)."""
  if len(ff.shape) != 2:  # a conv reads its unpacked kernel: packed, or dense when asked
    path = "dense" if implementation == "dense" else "packed"
  else:
    k, o = ff.shape
    path = implementation or decode_path(k, o, ff.pattern, rows, dtype=ff.values.dtype)
    check = {"native": value_serial.unsupported, "tiled": value_serial.tiled_unsupported,
             "sparse_tc": sparse_tc_unsupported}
    why = check[path](ff.values.dtype, ff) if path in check else None
    if why:
      logging.warning("nmsparse export layer %s %s (%s): the %s kernel cannot run it (%s) "
                      "-> packed", layer, ff.shape, ff.pattern, path, why)
      return "packed"
  logging.info("nmsparse export layer %s %s (%s), %d rows: implementation=%s -> %s", layer,
               ff.shape, ff.pattern, rows, implementation, path)
  return path


def materialize(exported: Exported | Mapping[str, Any], rows: int,
                implementation: str | None = None) -> dict[str, Any]:
  """The :func:`apply` variables serving products of ``rows`` rows, each packed kernel laid out for
  the path it runs on: the one-time load step (call it eagerly, outside ``jit``).

  Paths of a dense layer's kernel ``[K, O]``:

  * ``"native"``: ``value_serial.block_columns``-d (each block's columns contiguous) to
    ``native/<module path>/kernel`` for the native CUDA-core kernel
    (``value_serial.blocked_matmul``).
  * ``"tiled"``: ``value_serial.prepare``-d for the native tensor-core kernel
    (``value_serial.tiled_matmul``), at ``tiled/<module path>/kernel``.
  * ``"sparse_tc"``: compressed for the 2:4 sparse tensor cores (:class:`CompressedFF`, cuSPARSELt
    through the extension; N <= 2, M a multiple of 4, K and O multiples of 64), at
    ``sparse_tc/<module path>/kernel``. Only when asked: the card rules hold no measurement of it.
  * An operand the chosen native kernel does not take (``value_serial.unsupported`` /
    ``tiled_unsupported`` / :func:`sparse_tc_unsupported`: its pattern, shape or dtype) stays
    packed, and a warning names the layer and why.
  * ``"packed"``: kept at ``packed/<module path>/kernel`` (:func:`packed_matmul`).
  * ``"dense"``: unpacked to the masked kernel ``W * M_ff`` (in the values' dtype) at
    ``params/<module path>/kernel``: the layer runs as ``nn.Dense``.

  Conv kernels are unpacked into ``params`` for ``"dense"`` and stay packed otherwise
  (:class:`PackedConv` unpacks them in the forward). Every choice is logged (absl, INFO).

  Args:
    exported: an :class:`Exported` or its ``variables``; left as they are.
    rows: rows of each dense product served: the batch for an MLP, batch x tokens for a ViT.
    implementation: one of :data:`IMPLEMENTATIONS` for every sparse layer, or ``None``: per dense
      layer :func:`decode_path` at ``rows`` (``"native"``, ``"tiled"`` or ``"dense"``); convs
      stay packed.

  Returns:
    New variables (new dicts holding the same arrays): the input's collections with the kernels
    moved as above, plus :data:`NATIVE` / :data:`TILED` / :data:`SPARSE_TC` when a kernel runs
    there.

  Raises:
    ValueError: an unknown ``implementation``, or variables that were materialized native already.
  """
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {implementation!r}; expected one of "
                     f"{IMPLEMENTATIONS} or None (decode_path per layer).")
  variables = exported.variables if isinstance(exported, Exported) else exported
  if any(name in variables for name in (NATIVE, TILED, SPARSE_TC)):
    raise ValueError("These variables were materialized already (they hold native, tiled or "
                     "sparse_tc kernels); materialize the exported variables instead.")
  flat = {name: traverse_util.flatten_dict(tree, keep_empty_nodes=True)
          for name, tree in variables.items()}
  params, packed = flat.setdefault("params", {}), flat.setdefault(PACKED, {})
  moved = {NATIVE: {}, TILED: {}, SPARSE_TC: {}}
  for key, ff in list(packed.items()):
    if not isinstance(ff, PackedNM):  # an empty node
      continue
    path = _serving_path("/".join(key[:-1]), ff, rows, implementation)
    if path == "dense":
      params[key] = unpack(packed.pop(key))
    elif path == "native":
      moved[NATIVE][key] = value_serial.block_columns(packed.pop(key))
    elif path == "tiled":
      moved[TILED][key] = value_serial.prepare(packed.pop(key))
    elif path == "sparse_tc":
      moved[SPARSE_TC][key] = compress_ff(packed.pop(key))
  flat.update({name: tree for name, tree in moved.items() if tree})
  return {name: traverse_util.unflatten_dict(tree) for name, tree in flat.items()}


def layer_paths(variables: Exported | Mapping[str, Any],
                manifest: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Module path -> ``"native"``, ``"tiled"``, ``"sparse_tc"``, ``"packed"`` or ``"dense"``: how
  each layer exported sparse runs from ``variables`` (:func:`materialize`'s, or the export's: all
  packed).

  A kernel in :data:`NATIVE` runs native, in :data:`TILED` tiled, in :data:`SPARSE_TC` on the
  sparse tensor cores, in ``packed`` packed. A kernel materialized dense is a
  ``params`` kernel like those of the layers that always were, so those come from ``manifest``
  (the export's: its ``layers`` with a pattern); an :class:`Exported` brings its own. Without a
  manifest only the native and packed layers are listed.

  Raises:
    ValueError: a layer sparse in ``manifest`` whose kernel is nowhere in ``variables``.
  """
  if isinstance(variables, Exported):
    manifest = variables.manifest if manifest is None else manifest
    variables = variables.variables
  paths = {}
  for name, path in ((NATIVE, "native"), (TILED, "tiled"), (SPARSE_TC, "sparse_tc"),
                     (PACKED, "packed")):
    for key in traverse_util.flatten_dict(variables.get(name, {})):
      paths["/".join(key[:-1])] = path
  params = traverse_util.flatten_dict(variables.get("params", {}), sep="/")
  for kernel, entry in (manifest or {}).get("layers", {}).items():
    layer = kernel.rsplit("/", 1)[0]
    if entry["pattern"] is None or layer in paths:
      continue
    if kernel not in params:
      raise ValueError(f"Layer {layer!r} is {entry['pattern']} in the manifest, but the variables "
                       "hold no kernel for it: they belong to another export.")
    paths[layer] = "dense"
  return dict(sorted(paths.items()))
