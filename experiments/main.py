"""Trains one config: ``python -m experiments.main --config configs/<name>.py[:smoke] --workdir DIR
[--config.key=value ...]``."""

from absl import app, flags
from ml_collections import config_flags

from nmsparse.train import parallel, train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Run config file (get_config(arg)).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results go here (resumes from it).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  parallel.maybe_initialize_distributed(FLAGS.config.distributed)
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
