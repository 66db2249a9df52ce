"""ResNet50 (bottlenecks, CIFAR stem) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet50_cifar10.py --workdir runs/resnet50 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 15 epochs, batch 512, peak LR 0.4 (warm-up 3 epochs, linear decay).
Expected test accuracy: not yet measured. Runtime: not yet measured.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "resnet50_cifar10"
  c.model = "resnet50"
  c.model_kwargs.stem = "cifar"
  c.epochs = 15
  c.learning_rate = 0.4
  c.warmup_epochs = 3.0
  if arg == "smoke":
    base.smoke(c, dict(width=8, stem="cifar", stage_sizes=(1, 1)))
  return c
