"""The train state: flax ``TrainState`` plus BatchNorm statistics and the sparse layers'
``nm_masks`` (``mask_every > 1``: kernel snapshots and call counts); ``{}`` where a model has none."""

from __future__ import annotations

from typing import Any

from flax.training import train_state

from nmsparse.prune.schedule import MASK_COLLECTION


class TrainState(train_state.TrainState):
  """Parameters (fp32 masters), optimizer state, step, ``batch_stats`` and ``nm_masks``."""

  batch_stats: Any = None
  nm_masks: Any = None

  def variables(self, params: Any | None = None) -> dict[str, Any]:
    """The ``model.apply`` variables for ``params`` (default: the state's own)."""
    variables = {"params": self.params if params is None else params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    if self.nm_masks:
      variables[MASK_COLLECTION] = self.nm_masks
    return variables

  def checkpoint_items(self) -> dict[str, Any]:
    """The array pytree a checkpoint holds (``nm_masks`` only when the model has any)."""
    items = {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
             "opt_state": self.opt_state}
    if self.nm_masks:
      items[MASK_COLLECTION] = self.nm_masks
    return items

  def restore_items(self, items: dict[str, Any]) -> "TrainState":
    return self.replace(step=items["step"], params=items["params"],
                        batch_stats=items["batch_stats"], opt_state=items["opt_state"],
                        nm_masks=items.get(MASK_COLLECTION, self.nm_masks))
