"""The train state: flax ``TrainState`` plus BatchNorm statistics (``{}`` for models without)."""

from __future__ import annotations

from typing import Any

from flax.training import train_state


class TrainState(train_state.TrainState):
  """Parameters (fp32 masters), optimizer state, step and ``batch_stats``."""

  batch_stats: Any = None

  def variables(self, params: Any | None = None) -> dict[str, Any]:
    """The ``model.apply`` variables for ``params`` (default: the state's own)."""
    variables = {"params": self.params if params is None else params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables

  def checkpoint_items(self) -> dict[str, Any]:
    """The array pytree a checkpoint holds."""
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state}

  def restore_items(self, items: dict[str, Any]) -> "TrainState":
    return self.replace(step=items["step"], params=items["params"],
                        batch_stats=items["batch_stats"], opt_state=items["opt_state"])
