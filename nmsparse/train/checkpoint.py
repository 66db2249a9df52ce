"""Orbax checkpoints of the train state in ``workdir/checkpoints``: every k steps and at the end,
keep-last-k, only from finite arrays, automatic resume from the newest readable one."""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from nmsparse.prune.rules import path_str
from nmsparse.train.state import TrainState

PROGRESS = "progress"
UNREADABLE_DIR = "checkpoints_unreadable"


class NonFiniteParamsError(FloatingPointError):
  """A checkpoint would hold NaN/inf; the message names the step and the first such array."""


class NoReadableCheckpointError(RuntimeError):
  """Every checkpoint in the workdir failed to restore; the message lists why."""


@jax.jit
def _finite_leaves(tree: Any) -> list[jax.Array]:
  return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]


def first_non_finite(tree: Any) -> str | None:
  """The path (``params/hidden_0/kernel``) of the first floating array holding NaN/inf, or None."""
  flat = [(path_str(k), v) for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
          if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)]
  finite = jax.device_get(_finite_leaves([v for _, v in flat]))
  return next((path for (path, _), ok in zip(flat, finite) if not ok), None)


class Checkpointer:
  """Saves and restores a :class:`TrainState`'s arrays (params, batch stats, optimizer, step) and
  the run's progress within the current epoch (a pytree of arrays, see ``train/loop.py``)."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.keep = keep
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    # cleanup_tmp_directories: a save interrupted by a kill leaves a *.orbax-checkpoint-tmp folder,
    # removed here so that it never shadows a later save of the same step.
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=True))

  def save(self, state: TrainState, progress: Any) -> None:
    """Saves ``state`` and ``progress`` at ``state.step`` (once per step).

    Raises:
      NonFiniteParamsError: naming the step and the first array that holds NaN/inf; nothing is
        written then.
    """
    step = int(jax.device_get(state.step))
    if self.manager.latest_step() == step:
      return
    items = {**state.checkpoint_items(), PROGRESS: progress}
    bad = first_non_finite(items)
    if bad is not None:
      raise NonFiniteParamsError(
          f"Not saving the checkpoint of step {step}: {bad} holds NaN/inf. The newest checkpoint "
          f"on disk ({self.manager.latest_step()}) is finite; lower the learning rate or check "
          "the data.")
    self.manager.save(step, args=ocp.args.StandardSave(items))

  def restore_latest(self, state: TrainState, progress: Any) -> tuple[TrainState, Any]:
    """``state`` and ``progress`` restored from the newest readable checkpoint (shardings kept),
    or both unchanged when there is none.

    An unreadable checkpoint (truncated or garbled files) is logged with the reason, moved to
    ``workdir/checkpoints_unreadable/<step>`` and the next older one is tried.

    Raises:
      NoReadableCheckpointError: when checkpoints exist but none of them restores.
    """
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        items = self._restore(step, state, progress)
      except Exception as e:  # Orbax, Tensorstore and JSON raise many types for damaged files
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        failures.append(f"step {step} ({reason})")
        logging.warning("Checkpoint of step %d in %s is unreadable (%s); skipping it, moved to "
                        "%s.", step, self.directory, reason, self._set_aside(step))
        continue
      if failures:
        self.manager.close()
        self.manager = self._open()
        logging.warning("Resuming from the newest readable checkpoint, step %d (skipped: %s).",
                        step, "; ".join(failures))
      logging.info("Resumed from %s at step %d", self.directory, step)
      return state.restore_items(items), items.get(PROGRESS)
    if failures:
      raise NoReadableCheckpointError(
          f"No checkpoint in {self.directory} restores: {'; '.join(failures)}. They were moved "
          f"to {os.path.join(self.workdir, UNREADABLE_DIR)}; delete the workdir to start afresh.")
    return state, None

  def _restore(self, step: int, state: TrainState, progress: Any) -> dict[str, Any]:
    """The items of ``step``; a checkpoint written before they carried progress restores
    without it."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {**state.checkpoint_items(), PROGRESS: progress})
    try:
      items = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as error:  # pylint: disable=broad-except
      del abstract[PROGRESS]
      try:
        items = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception:  # pylint: disable=broad-except
        raise error from None  # the damage, not the failed read without progress
      logging.warning("Checkpoint of step %d predates epoch progress in checkpoints: this "
                      "epoch's train metrics and mask flips cover the steps after the resume.",
                      step)
    bad = first_non_finite(items)
    if bad is not None:
      raise NonFiniteParamsError(f"{bad} holds NaN/inf")
    return items

  def _set_aside(self, step: int) -> str:
    target = os.path.join(self.workdir, UNREADABLE_DIR, str(step))
    if os.path.exists(target):
      shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), target)
    return target

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
