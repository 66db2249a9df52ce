"""ResNet9 (the fast CIFAR ResNet) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet9_cifar10.py --workdir runs/resnet9 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 18 epochs, batch 512, peak LR 0.4 (warm-up 4 epochs, linear decay).
Expected test accuracy (measured, results/runs, 2 seeds, one NVIDIA H100 80GB HBM3 each):
dense 93.45 ± 0.04 %, bdwp 2:8 93.08 ± 0.01 %.
Runtime (wall_time_s of those runs): dense 40-42 s, bdwp 2:8 50-51 s per run.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "resnet9_cifar10"
  c.model = "resnet9"
  c.epochs = 18
  c.learning_rate = 0.4
  c.warmup_epochs = 4.0
  if arg == "smoke":
    base.smoke(c, dict(width=8))
  return c
