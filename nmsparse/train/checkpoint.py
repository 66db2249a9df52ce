"""Orbax checkpoints of the train state in ``workdir/checkpoints``: every k steps and at the end,
keep-last-k, automatic resume from the latest."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from nmsparse.train.state import TrainState


class Checkpointer:
  """Saves and restores a :class:`TrainState`'s arrays (params, batch stats, optimizer, step)."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def save(self, state: TrainState) -> None:
    step = int(jax.device_get(state.step))
    if self.manager.latest_step() == step:
      return
    self.manager.save(step, args=ocp.args.StandardSave(state.checkpoint_items()))

  def restore_latest(self, state: TrainState) -> TrainState:
    """Returns ``state`` restored from the latest checkpoint (shardings kept), or unchanged."""
    step = self.manager.latest_step()
    if step is None:
      return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
    items = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    logging.info("Resumed from %s at step %d", self.directory, step)
    return state.restore_items(items)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
