"""VGG19 with batch norm on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/vgg19_cifar10.py --workdir runs/vgg19 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 25 epochs, batch 512, peak LR 0.2 (warm-up 5 epochs, linear decay).
Expected test accuracy (measured, results/runs, 2 seeds, one NVIDIA H100 80GB HBM3 each):
dense 91.17 ± 0.24 %, bdwp 2:8 91.10 ± 0.23 %.
Runtime (wall_time_s of those runs): dense 53-54 s, bdwp 2:8 65-69 s per run.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "vgg19_cifar10"
  c.model = "vgg19"
  c.epochs = 25
  c.learning_rate = 0.2
  c.warmup_epochs = 5.0
  if arg == "smoke":
    base.smoke(c, dict(layers=(8, "M", 8, 16, "M", 16, "M")))
  return c
