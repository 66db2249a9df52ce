"""Jitted train and eval steps: on-device batch gather + augmentation, a plain ``value_and_grad`` +
optimizer update per device under ``shard_map``, gradients and BatchNorm statistics averaged with
``lax.pmean`` over the ``data`` axis. The sparsity lives inside the layers' ops.

The whole (uint8) dataset is replicated on every device; each step receives only integer indices
(sharded over devices), so no images cross the host-device link during training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from nmsparse.data.augment import augment, mix_batch, normalize, recipe_augment
from nmsparse.prune.permutation import SEARCH_COLLECTION
from nmsparse.train.parallel import AXIS, shard_map
from nmsparse.train.state import TrainState

Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """How raw uint8 images become model inputs; the recipe fields (config ``augment``) default off."""

  mean: tuple[float, ...]
  std: tuple[float, ...]
  pad: int
  flip: bool
  dtype: Any
  cutout: int = 0
  randaugment_ops: int = 0
  randaugment_magnitude: float = 0.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  mix_switch_prob: float = 0.5

  @property
  def recipe(self) -> bool:
    """Whether any recipe augmentation is on (else the plain crop/flip path)."""
    return bool(self.cutout or self.randaugment_ops or self.mixup_alpha or self.cutmix_alpha)

  @property
  def mixes(self) -> bool:
    return bool(self.mixup_alpha or self.cutmix_alpha)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float) -> jax.Array:
  """Per-example softmax cross-entropy with label smoothing (fp32)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def update(state: TrainState, model: nn.Module, images: jax.Array, labels: jax.Array,
           num_classes: int, label_smoothing: float, grad_sync: bool = True,
           targets: jax.Array | None = None, dropout_key: jax.Array | None = None,
           search: bool = False) -> tuple[TrainState, Metrics]:
  """One device's step: loss, gradients averaged over ``data``, optimizer update.

  ``grad_sync=False`` skips the gradient and BatchNorm all-reduces (each device then trains its
  own replica): only for measuring what the all-reduce costs, never for training. ``targets``:
  soft targets (mixup/CutMix, already smoothed) in place of ``labels`` in the loss.
  ``dropout_key``: the model's ``"dropout"`` PRNG stream (the ViT's stochastic depth and
  attention dropout); a model that draws from it fails without one. ``search``: mark the call as a
  bimask search call (``nm_search`` mutable; :mod:`nmsparse.prune.permutation`).
  """
  rngs = None if dropout_key is None else {"dropout": dropout_key}
  mutable = ["batch_stats", "nm_masks"] + ([SEARCH_COLLECTION] if search else [])

  def loss_fn(params):
    logits, new_vars = model.apply(state.variables(params), images, train=True,
                                   mutable=mutable, rngs=rngs)
    if targets is None:
      loss = cross_entropy(logits, labels, num_classes, label_smoothing).mean()
    else:
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
    return loss, (logits, new_vars.get("batch_stats", state.batch_stats),
                  new_vars.get("nm_masks", state.nm_masks))

  (loss, (logits, batch_stats, nm_masks)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  if grad_sync:
    grads = lax.pmean(grads, AXIS)
    batch_stats = lax.pmean(batch_stats, AXIS)
  # nm_masks (mask_every > 1 snapshots) come from the replicated params: no all-reduce.
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats, nm_masks=nm_masks)
  metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
  return state, lax.pmean(metrics, AXIS)


DROPOUT_STREAM = 0x64726F70  # folded into a step's key for the model's "dropout" stream


def make_train_step(model: nn.Module, mesh: Mesh, inputs: InputSpec, num_classes: int,
                    label_smoothing: float, grad_sync: bool = True,
                    search: bool = False) -> Callable[..., tuple[TrainState, Metrics]]:
  """``step(state, images, labels, order, i, key)``: trains on ``images[order[i]]``.

  ``images``/``labels`` are the replicated training set, ``order`` the epoch's ``[steps, batch]``
  index table sharded over devices along the batch axis, ``i`` the step within the epoch and
  ``key`` the run's base PRNG key; augmentation draws from ``fold_in(key, state.step, device)``,
  the model's dropout from that key folded with :data:`DROPOUT_STREAM` (so the augmentation draws
  are the same with and without it). ``grad_sync``, ``search``: see :func:`update`.
  """
  mean, std = jnp.asarray(inputs.mean), jnp.asarray(inputs.std)

  def per_device(state, images, labels, order, i, key):
    idx = order[i]
    key = jax.random.fold_in(jax.random.fold_in(key, state.step), lax.axis_index(AXIS))
    drop_key = jax.random.fold_in(key, DROPOUT_STREAM)
    if not inputs.recipe:
      x = augment(key, images[idx], mean, std, pad=inputs.pad, flip=inputs.flip,
                  dtype=inputs.dtype)
      return update(state, model, x, labels[idx], num_classes, label_smoothing, grad_sync,
                    dropout_key=drop_key, search=search)
    aug_key, mix_key = jax.random.split(key)
    x = recipe_augment(aug_key, images[idx], mean, std, pad=inputs.pad, flip=inputs.flip,
                       dtype=inputs.dtype, cutout_size=inputs.cutout,
                       randaugment_ops=inputs.randaugment_ops,
                       randaugment_magnitude=inputs.randaugment_magnitude)
    targets = None
    if inputs.mixes:
      smooth = optax.smooth_labels(jax.nn.one_hot(labels[idx], num_classes), label_smoothing)
      x, targets = mix_batch(mix_key, x, smooth, inputs.mixup_alpha, inputs.cutmix_alpha,
                             inputs.mix_switch_prob)
    return update(state, model, x, labels[idx], num_classes, label_smoothing, grad_sync, targets,
                  drop_key, search)

  step = shard_map(per_device, mesh, in_specs=(P(), P(), P(), P(None, AXIS), P(), P()),
                   out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def make_batch_train_step(model: nn.Module, mesh: Mesh, num_classes: int,
                          label_smoothing: float) -> Callable[..., tuple[TrainState, Metrics]]:
  """``step(state, x, y)`` on an already prepared, batch-sharded input (no data loading at all);
  for measuring what the input pipeline costs."""
  def per_device(state, images, labels):
    return update(state, model, images, labels, num_classes, label_smoothing)

  step = shard_map(per_device, mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def make_eval_step(model: nn.Module, mesh: Mesh, inputs: InputSpec,
                   num_classes: int) -> Callable[..., Metrics]:
  """``eval(state, images, labels, order, valid, i)``: summed loss, correct count and count over
  the valid entries of batch ``order[i]``."""
  mean, std = jnp.asarray(inputs.mean), jnp.asarray(inputs.std)

  def per_device(state, images, labels, order, valid, i):
    idx, ok = order[i], valid[i].astype(jnp.float32)
    x = normalize(images[idx], mean, std, inputs.dtype)
    logits = model.apply(state.variables(), x, train=False)
    y = labels[idx]
    sums = {"loss": jnp.sum(cross_entropy(logits, y, num_classes, 0.0) * ok),
            "correct": jnp.sum((jnp.argmax(logits, -1) == y) * ok), "count": jnp.sum(ok)}
    return lax.psum(sums, AXIS)

  step = shard_map(per_device, mesh, in_specs=(P(), P(), P(), P(None, AXIS), P(None, AXIS), P()),
                   out_specs=P())
  return jax.jit(step)


def make_stream_train_step(model: nn.Module, mesh: Mesh, inputs: InputSpec, num_classes: int,
                           label_smoothing: float,
                           search: bool = False) -> Callable[..., tuple[TrainState, Metrics]]:
  """``step(state, images, labels)`` on a batch-sharded uint8 batch augmented on the host
  (``data.pipeline="stream"``): normalise on the device, then :func:`update` (``search`` there)."""
  mean, std = jnp.asarray(inputs.mean), jnp.asarray(inputs.std)

  def per_device(state, images, labels):
    x = normalize(images, mean, std, inputs.dtype)
    return update(state, model, x, labels, num_classes, label_smoothing, search=search)

  step = shard_map(per_device, mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=(0,))


def make_stream_eval_step(model: nn.Module, mesh: Mesh, inputs: InputSpec,
                          num_classes: int) -> Callable[..., Metrics]:
  """``eval(state, images, labels, valid)`` on a batch-sharded uint8 batch: summed loss, correct
  count and count over the valid entries."""
  mean, std = jnp.asarray(inputs.mean), jnp.asarray(inputs.std)

  def per_device(state, images, labels, valid):
    ok = valid.astype(jnp.float32)
    logits = model.apply(state.variables(), normalize(images, mean, std, inputs.dtype),
                         train=False)
    sums = {"loss": jnp.sum(cross_entropy(logits, labels, num_classes, 0.0) * ok),
            "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * ok), "count": jnp.sum(ok)}
    return lax.psum(sums, AXIS)

  step = shard_map(per_device, mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)), out_specs=P())
  return jax.jit(step)
