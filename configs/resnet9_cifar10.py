"""ResNet9 (the fast CIFAR ResNet) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet9_cifar10.py --workdir runs/resnet9 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 18 epochs, batch 512, peak LR 0.4 (warm-up 4 epochs, linear decay).
Expected test accuracy (measured, results/runs, 2 seeds, one NVIDIA H100 80GB HBM3 each):
dense 93.45 ± 0.04 %, bdwp 2:8 93.08 ± 0.01 %.
Runtime (wall_time_s of those runs): dense 40-42 s, bdwp 2:8 50-51 s per run.

``:full`` is Page's DAWNBench recipe (issue 14): 24 epochs, batch 512, triangular LR 0 -> 0.4 at
epoch 5 -> 0, SGD Nesterov 0.9, weight decay 5e-4, crop+flip, cutout 8x8, label smoothing 0.2.
Its sweep is dense/bdwp 2:8 x 3 seeds, srste/bimask 2:8 x 1 seed:
  python -m experiments.sweep --config configs/resnet9_cifar10.py:full --workdir_root runs \
      --results_dir results/runs --gpus N --set data.data_dir=./data
Expected dense test accuracy: ~94 % (Page's public result). Measured (results/runs, one NVIDIA H200,
git 6da49c8 code): dense 93.93 ± 0.07 % (3 seeds), bdwp 2:8 93.72 ± 0.37 % (3 seeds), srste 2:8
93.73 %, bimask 2:8 93.60 % (seed 0).
Runtime: 15-44 s per run, each sharing the GPU with a ViT run (scripts/gpu_table.sh, 2 lanes).
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, base.VARIANTS)
  c = base.base_config()
  c.name = "resnet9_cifar10"
  c.model = "resnet9"
  c.epochs = 18
  c.learning_rate = 0.4
  c.warmup_epochs = 4.0
  if arg == "full":
    base.full_name(c)
    c.epochs = 24
    c.warmup_epochs = 5.0
    c.initial_lr_fraction = 0.0
    c.label_smoothing = 0.2
    c.augment.cutout = 8
    c.sweep = base.FULL_TABLE + base.FULL_BASELINES_ONE_SEED
  if arg == "smoke":
    base.smoke(c, dict(width=8))
  return c
