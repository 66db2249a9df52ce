"""Flax linen layers: drop-in ``nn.Dense``/``nn.Conv`` replacements that train with N:M sparsity.

They subclass the stock layers, so parameter names, shapes and initialisers are the stock ones and
checkpoints move between dense and sparse models unchanged. Sparse methods keep the kernel in
``param_dtype`` (the fp32 master) and hand it to the op with activations in ``dtype``; the op casts
the masked kernel, so weight gradients stay in ``param_dtype``.

``mask_every > 1`` (SPEC §1): the masks come from a snapshot of the kernel that is refreshed every
``mask_every`` training calls. It lives in the ``nm_masks`` collection (``kernel_snapshot`` in
``param_dtype``, int32 ``count``), initialised to the initial kernel and 0. A call where
``nm_masks`` is mutable is a training step: when ``count % mask_every == 0`` the snapshot becomes
the current kernel (before use), then ``count`` grows by one. A call where it is not mutable
(evaluation) uses the stored snapshot. ``mask_every=1`` (the default) creates no such collection.

``method="bimask"`` (SPEC §1) keeps its backward-mask permutation in the same collection
(``permutation``, int32 ``[O]``, initially the identity, with the shared ``count``): a training call
with ``count % bimask_refresh == 0`` replaces it, before use, by the best of ``bimask_candidates``
random permutations of the mask source (:func:`nmsparse.prune.permutation.best_permutation`),
drawn from ``bimask_seed``, the layer's path and ``count``. ``bimask_search="marked_calls"``
computes that search only in training calls that also make ``nm_search`` mutable and keeps the
permutation in the others (the caller marks every call whose count is a multiple of
``bimask_refresh``; :mod:`nmsparse.prune.permutation` says when this pays).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from absl import logging

from nmsparse.layer_args import compute_dtype, conv_layer_args, flatten_images
from nmsparse.ops import nm_conv, nm_dense
from nmsparse.prune.permutation import (DEFAULT_CANDIDATES, DEFAULT_REFRESH, DEFAULT_SEARCH,
                                        SEARCH_COLLECTION, check_bimask_settings,
                                        identity_permutation, layer_key, refresh_permutation)
from nmsparse.prune.rules import LayerRules
from nmsparse.prune.schedule import MASK_COLLECTION, check_mask_every, refresh_mask_source
from nmsparse.types import NMPattern, PatternLike, as_pattern, check_method


# Fields only: the stock layer subclassed after this one keeps Flax's __init__, repr and eq, and
# these fields follow the stock ones (so positional arguments are the stock layer's).
@dataclasses.dataclass(init=False, repr=False, eq=False)
class _NMFields:
  """The sparse layers' extra attributes (:class:`NMDense`)."""

  pattern: PatternLike | LayerRules | None = None
  method: str = "bdwp"
  sr_ste_lambda: float = 2e-4
  implementation: str | None = None
  mask_every: int = 1
  bimask_candidates: int = DEFAULT_CANDIDATES
  bimask_refresh: int = DEFAULT_REFRESH
  bimask_seed: int = 0
  bimask_search: str = DEFAULT_SEARCH


class _NMMixin(_NMFields):
  """Pattern resolution and sparse state shared by the sparse layers."""

  def resolved_pattern(self) -> NMPattern | None:
    """This layer's pattern; with ``LayerRules``, the rule matching ``<module path>/kernel``."""
    check_method(self.method)
    if self.method == "dense":
      return None
    if isinstance(self.pattern, LayerRules):
      path = "/".join(self.path) + "/kernel"
      pattern = self.pattern.pattern_for(path)
      if self.is_initializing():
        logging.info("nmsparse layer %s: %s (%s)", path, pattern or "dense", self.method)
      return pattern
    return as_pattern(self.pattern)

  def _sparse_state(self, kernel: jnp.ndarray,
                    pattern: NMPattern) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
    """``(mask_source, permutation)`` for the op: the ``mask_every`` kernel snapshot (``None`` for
    ``mask_every=1``) and bimask's permutation (``None`` for other methods); module docstring."""
    name = self._layer_name()
    every = check_mask_every(self.mask_every, name)
    bimask = self.method == "bimask"
    if every == 1 and not bimask:
      return None, None
    count = self.variable(MASK_COLLECTION, "count", lambda: jnp.zeros((), jnp.int32))
    training = self.is_mutable_collection(MASK_COLLECTION) and not self.is_initializing()
    calls = count.value
    source = None
    if every > 1:
      snapshot = self.variable(MASK_COLLECTION, "kernel_snapshot", lambda: kernel)
      if training:
        snapshot.value, _ = refresh_mask_source(kernel, snapshot.value, calls, every)
      source = snapshot.value
    perm = None
    if bimask:
      check_bimask_settings(self.bimask_candidates, self.bimask_refresh, name, self.bimask_search)
      perm = self.variable(MASK_COLLECTION, "permutation",
                           lambda: identity_permutation(kernel.shape[-1]))
      if training and (self.bimask_search == "every_call"
                       or self.is_mutable_collection(SEARCH_COLLECTION)):
        perm.value = refresh_permutation(
            kernel if source is None else source, perm.value, calls, pattern,
            self.bimask_refresh, self.bimask_candidates, layer_key(self.bimask_seed, name))
      perm = perm.value
    if training:
      count.value = calls + 1
    return source, perm

  def _add_bias(self, y: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    """The stock ``bias`` parameter (when ``use_bias``), added in the compute dtype."""
    if not self.use_bias:
      return y
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    return y + jnp.asarray(bias, dtype)

  def _layer_name(self) -> str:
    return "/".join(self.path) or self.name or type(self).__name__


class NMDense(_NMMixin, nn.Dense):
  """``nn.Dense`` whose kernel is pruned N:M per ``method`` (SPEC §1).

  Extra attributes: ``pattern`` (``"N:M"``, ``NMPattern``, ``LayerRules`` or ``None`` = dense),
  ``method`` (``dense|srste|bdwp|bimask``), ``sr_ste_lambda``, ``implementation``
  (``"xla"|"pallas"|None``), ``mask_every`` (recompute the masks every that many training calls,
  from a kernel snapshot in the ``nm_masks`` collection; see the module docstring),
  ``bimask_candidates``/``bimask_refresh``/``bimask_seed``/``bimask_search`` (bimask's permutation
  search; the module docstring). With
  ``method="dense"`` or no pattern it is exactly ``nn.Dense``.
  """

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    pattern = self.resolved_pattern()
    if pattern is None:
      return super().__call__(inputs)
    kernel = self.param("kernel", self.kernel_init, (jnp.shape(inputs)[-1], self.features),
                        self.param_dtype)
    dtype = compute_dtype(self.dtype, inputs, kernel)
    source, perm = self._sparse_state(kernel, pattern)
    y = nm_dense(jnp.asarray(inputs, dtype), kernel, pattern, self.method, self.sr_ste_lambda,
                 self.implementation, name=self._layer_name(), mask_source=source,
                 permutation=perm)
    return self._add_bias(y, dtype)


class NMConv(_NMMixin, nn.Conv):
  """``nn.Conv`` (2-D, NHWC) whose HWIO kernel is pruned N:M per ``method`` (SPEC §1).

  Extra attributes as :class:`NMDense`. Sparse layers support ``feature_group_count=1``, no input
  dilation, and ``SAME``/``VALID``/explicit padding; anything else raises ``ValueError`` (keep such a
  layer dense with a layer rule). With ``method="dense"`` or no pattern it is exactly ``nn.Conv``.
  """

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    pattern = self.resolved_pattern()
    if pattern is None:
      return super().__call__(inputs)
    name = self._layer_name()
    args = conv_layer_args(name, self.kernel_size, self.strides, self.padding,
                           self.kernel_dilation, self.input_dilation, self.feature_group_count,
                           shared_weights=self.shared_weights, mask=self.mask)
    x, restore_batch = flatten_images(inputs)
    kernel = self.param("kernel", self.kernel_init,
                        args.kernel_size + (x.shape[-1], self.features), self.param_dtype)
    dtype = compute_dtype(self.dtype, x, kernel)
    source, perm = self._sparse_state(kernel, pattern)
    y = nm_conv(jnp.asarray(x, dtype), kernel, pattern, self.method,
                strides=args.strides, padding=args.padding, sr_ste_lambda=self.sr_ste_lambda,
                implementation=self.implementation, rhs_dilation=args.kernel_dilation, name=name,
                mask_source=source, permutation=perm)
    return restore_batch(self._add_bias(y, dtype))
