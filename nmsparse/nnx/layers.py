"""Flax nnx layers: ``nnx.Linear``/``nnx.Conv`` twins that train with N:M sparsity.

Same parameters (``kernel``, ``bias``), shapes and initialisers as the stock layers; the extra
attributes ``pattern``, ``method``, ``sr_ste_lambda``, ``implementation`` and ``mask_every`` decide
the sparse path. :func:`apply_rules` sets every sparse layer's pattern in a model from
``LayerRules``.

``mask_every > 1`` (SPEC §1) works as in :mod:`nmsparse.nn.layers`: the masks come from a kernel
snapshot, held with an int32 call ``count`` in :class:`NMMasks` variables (the ``nm_masks``
collection, registered under that name for the linen bridge), initialised to the initial kernel and
0. Training vs evaluation follows ``nnx.BatchNorm``: the layer's ``use_running_average`` flag, which
``model.train()`` sets to False and ``model.eval()`` to True (or ``nnx.view``). With False (the
default) a call refreshes the snapshot from the current kernel when ``count % mask_every == 0``
(before use) and counts itself; with True it uses the stored snapshot. ``mask_every=1`` (the
default) creates no such variables.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from absl import logging
from flax import nnx

from nmsparse.layer_args import compute_dtype, conv_layer_args, flatten_images
from nmsparse.ops import nm_conv, nm_dense
from nmsparse.prune.rules import LayerRules, path_str
from nmsparse.prune.schedule import MASK_COLLECTION, check_mask_every, refresh_mask_source
from nmsparse.types import NMPattern, PatternLike, as_pattern, check_method


@nnx.register_variable_name(MASK_COLLECTION)
class NMMasks(nnx.Variable):
  """A sparse layer's ``mask_every`` state: its kernel snapshot and call count (never trained)."""


class _NMMixin:
  """The sparse settings shared by the nnx layers."""

  def _init_sparse(self, pattern: PatternLike | None, method: str, sr_ste_lambda: float,
                   implementation: str | None, mask_every: int, use_running_average: bool):
    self.pattern = as_pattern(pattern)
    self.method = check_method(method)
    self.sr_ste_lambda = sr_ste_lambda
    self.implementation = implementation
    self.mask_every = check_mask_every(mask_every, type(self).__name__)
    self.use_running_average = use_running_average
    if mask_every > 1:
      self.kernel_snapshot = NMMasks(self.kernel[...])
      self.count = NMMasks(jnp.zeros((), jnp.int32))

  def _active_pattern(self) -> NMPattern | None:
    return None if self.method == "dense" else self.pattern

  def _mask_source(self, kernel: jnp.ndarray) -> jnp.ndarray | None:
    """``None`` for ``mask_every=1``, else the kernel snapshot (see the module docstring)."""
    if self.mask_every == 1:
      return None
    if not self.use_running_average:
      self.kernel_snapshot[...], self.count[...] = refresh_mask_source(
          kernel, self.kernel_snapshot[...], self.count[...], self.mask_every)
    return self.kernel_snapshot[...]


class NMLinear(_NMMixin, nnx.Linear):
  """``nnx.Linear`` whose kernel is pruned N:M per ``method`` (SPEC §1); dense without a pattern.

  ``mask_every`` and ``use_running_average`` (training: False) as in the module docstring.
  """

  def __init__(self, in_features: int, out_features: int, *, pattern: PatternLike | None = None,
               method: str = "bdwp", sr_ste_lambda: float = 2e-4,
               implementation: str | None = None, mask_every: int = 1,
               use_running_average: bool = False, **kwargs: Any):
    super().__init__(in_features, out_features, **kwargs)
    self._init_sparse(pattern, method, sr_ste_lambda, implementation, mask_every,
                      use_running_average)

  def __call__(self, inputs: jnp.ndarray, **kwargs: Any) -> jnp.ndarray:
    pattern = self._active_pattern()
    if pattern is None:
      return super().__call__(inputs, **kwargs)
    kernel = self.kernel[...]
    dtype = compute_dtype(self.dtype, inputs, kernel)
    y = nm_dense(jnp.asarray(inputs, dtype), kernel, pattern, self.method, self.sr_ste_lambda,
                 self.implementation, name=type(self).__name__,
                 mask_source=self._mask_source(kernel))
    if self.bias is not None:
      y = y + jnp.asarray(self.bias[...], dtype)
    return y


class NMConv(_NMMixin, nnx.Conv):
  """``nnx.Conv`` (2-D, NHWC, HWIO kernel) pruned N:M per ``method``; dense without a pattern.

  ``mask_every`` and ``use_running_average`` (training: False) as in the module docstring.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: Any, strides: Any = 1, *,
               pattern: PatternLike | None = None, method: str = "bdwp",
               sr_ste_lambda: float = 2e-4, implementation: str | None = None,
               mask_every: int = 1, use_running_average: bool = False, **kwargs: Any):
    super().__init__(in_features, out_features, kernel_size, strides, **kwargs)
    self._init_sparse(pattern, method, sr_ste_lambda, implementation, mask_every,
                      use_running_average)

  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    pattern = self._active_pattern()
    if pattern is None:
      return super().__call__(inputs)
    name = type(self).__name__
    args = conv_layer_args(name, self.kernel_size, self.strides, self.padding,
                           self.kernel_dilation, self.input_dilation, self.feature_group_count,
                           mask=self.mask)
    x, restore_batch = flatten_images(inputs)
    kernel = self.kernel[...]
    dtype = compute_dtype(self.dtype, x, kernel)
    y = nm_conv(jnp.asarray(x, dtype), kernel, pattern, self.method, strides=args.strides,
                padding=args.padding, sr_ste_lambda=self.sr_ste_lambda,
                implementation=self.implementation, rhs_dilation=args.kernel_dilation, name=name,
                mask_source=self._mask_source(kernel))
    if self.bias is not None:
      y = y + jnp.asarray(self.bias[...], dtype)
    return restore_batch(y)


def apply_rules(model: nnx.Module, rules: LayerRules, method: str | None = None) -> dict[str, Any]:
  """Sets the pattern (and optionally the method) of every sparse layer in ``model`` from ``rules``.

  A layer's rule path is its attribute path plus ``/kernel`` (e.g. ``"blocks/0/mlp/kernel"``).

  Returns:
    ``{path: pattern or None}`` for every sparse layer, in graph order (also logged).
  """
  chosen = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, (NMLinear, NMConv)):
      key = (path_str(path) + "/kernel").lstrip("/")
      node.pattern = rules.pattern_for(key)
      if method is not None:
        node.method = check_method(method)
      chosen[key] = node.pattern
      logging.info("nmsparse layer %s: %s (%s)", key, node.pattern or "dense", node.method)
  return chosen
