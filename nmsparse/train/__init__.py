"""Training: state, jitted data-parallel steps, loop, checkpoints, metrics and FLOPs accounting."""

from nmsparse.train.checkpoint import NoReadableCheckpointError, NonFiniteParamsError
from nmsparse.train.loop import NonFiniteLossError, Run, run_name, train_and_evaluate
from nmsparse.train.state import TrainState
from nmsparse.train.workdir import ConfigMismatchError, WorkdirBusyError

__all__ = ["ConfigMismatchError", "NoReadableCheckpointError", "NonFiniteLossError",
           "NonFiniteParamsError", "Run", "TrainState", "WorkdirBusyError", "run_name",
           "train_and_evaluate"]
