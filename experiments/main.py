"""Trains one config: ``nms-train --config NAME[:smoke] --workdir DIR [--config.key=value ...]``.

``NAME`` is a packaged config (``quickstart``, ``resnet9_cifar10``, ...) or a path ending in
``.py``; ``python -m experiments.main`` takes the same flags.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments.config_io import resolve_config_argv
from nmsparse.train import parallel, train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Run config: a packaged config name or a .py file, with an optional :arg.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results go here (resumes from it).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  parallel.maybe_initialize_distributed(FLAGS.config.distributed)
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
  """The ``nms-train`` entry point: packaged config names resolved to their files first."""
  app.run(main, argv=resolve_config_argv(sys.argv))


if __name__ == "__main__":
  run()
