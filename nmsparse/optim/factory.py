"""Small optax factories driven by a run config (``optimizer``, ``schedule``, ``learning_rate``...)."""

from __future__ import annotations

from typing import Any

import jax
import optax


def create_schedule(config: Any, steps_per_epoch: int) -> optax.Schedule:
  """Learning-rate schedule over ``config.epochs * steps_per_epoch`` steps.

  ``onecycle``: linear warm-up to ``learning_rate`` over ``warmup_epochs``, linear decay to 0 (the
  fast CIFAR ResNet recipe). ``cosine``: linear warm-up, then cosine decay to 0. ``constant``.
  """
  total = max(1, int(config.epochs * steps_per_epoch))
  warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
  peak = config.learning_rate
  if config.schedule == "onecycle":
    return optax.join_schedules([optax.linear_schedule(peak * config.initial_lr_fraction,
                                                       peak, max(warmup, 1)),
                                 optax.linear_schedule(peak, 0.0, max(total - warmup, 1))],
                                [max(warmup, 1)])
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=0.0)
  if config.schedule == "constant":
    return optax.constant_schedule(peak)
  raise ValueError(f"Unknown schedule {config.schedule!r}; use onecycle, cosine or constant.")


def decay_mask(params: Any) -> Any:
  """Weight decay on kernels (rank >= 2) only, not on biases, norm scales or position embeddings."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim >= 2 and "pos_embedding" not in jax.tree_util.keystr(path), params)


def create_optimizer(config: Any, steps_per_epoch: int) -> tuple[optax.GradientTransformation,
                                                                  optax.Schedule]:
  """``config.optimizer``: ``sgd`` (momentum, nesterov, decoupled-from-loss L2 on kernels) or
  ``adamw`` (decoupled weight decay on kernels); optional global-norm clipping ``grad_clip``."""
  schedule = create_schedule(config, steps_per_epoch)
  parts = []
  if config.grad_clip:
    parts.append(optax.clip_by_global_norm(config.grad_clip))
  if config.optimizer == "sgd":
    parts += [optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
              optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov)]
  elif config.optimizer == "adamw":
    parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                             weight_decay=config.weight_decay, mask=decay_mask))
  else:
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; use sgd or adamw.")
  return optax.chain(*parts), schedule
