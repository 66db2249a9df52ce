"""Training: state, jitted data-parallel steps, loop, checkpoints, metrics and FLOPs accounting."""

from nmsparse.train.loop import NonFiniteLossError, Run, run_name, train_and_evaluate
from nmsparse.train.state import TrainState

__all__ = ["NonFiniteLossError", "Run", "TrainState", "run_name", "train_and_evaluate"]
