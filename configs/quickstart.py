"""Quickstart: dense vs BDWP 2:4 on scikit-learn's bundled digits (1797 real 8x8 images), CPU, < 2 min.

Command (trains both runs of the sweep, prints both test accuracies):
  python -m experiments.sweep --config configs/quickstart.py --workdir_root /tmp/nmsparse_quickstart
Model: MLP 64-256-256-10 (hidden layers 2:4 sparse, classifier dense), AdamW, 30 epochs, batch 64.
Expected: both around 0.97 test accuracy, BDWP within 2 points of dense (the CPU test checks this).
Runtime: 8.1 s wall for both runs on a 2-core CPU machine (dense 0.9806, BDWP 2:4 0.9722, gap -0.83).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "quickstart_digits"
  c.model = "mlp"
  c.model_kwargs = ml_collections.ConfigDict(dict(features=(256, 256)))
  c.data.source = "digits"
  c.data.name = "digits"
  c.data.image_size = 8
  c.data.channels = 1
  c.data.crop_padding = 0
  c.data.flip = False
  c.method = "bdwp"
  c.pattern = "2:4"
  c.epochs = 30
  c.batch_size = 64
  c.eval_batch_size = 120
  c.dtype = "float32"
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.schedule = "cosine"
  c.warmup_epochs = 2.0
  c.weight_decay = 1e-4
  c.label_smoothing = 0.0
  c.checkpoint_every_steps = 0
  c.log_every_steps = 100
  c.progress_bar = False
  c.tensorboard = False
  c.track_mask_flips = False
  c.sweep = [dict(methods=["dense", "bdwp"], patterns=["2:4"], seeds=[0])]
  if arg == "smoke":
    c.name += "_smoke"
    c.epochs = 1
  return c
