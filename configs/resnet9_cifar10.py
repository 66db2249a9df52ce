"""ResNet9 (the fast CIFAR ResNet) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet9_cifar10.py --workdir runs/resnet9 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 18 epochs, batch 512, peak LR 0.4 (warm-up 4 epochs, linear decay).
Expected test accuracy: not yet measured.
Runtime: measured train step at batch 512, bf16, one NVIDIA H100 80GB HBM3, synthetic data with the
on-device input pipeline (scripts/step_time.py, median of 30 steps): dense 5.16 ms, bdwp 2:8 (pallas)
5.27 ms, i.e. about 0.5 s per epoch; the whole 18-epoch run is not yet measured.
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
