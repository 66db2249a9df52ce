"""ResNet18 (CIFAR stem) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet18_cifar10.py --workdir runs/resnet18 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 20 epochs, batch 512, peak LR 0.4 (warm-up 4 epochs, linear decay).
The sweep adds srste/bimask 2:8 and the bdwp ratio ablation {1:4, 2:4, 4:8, 1:8} (issue 5).
Expected test accuracy (measured, results/runs, one NVIDIA H100 80GB HBM3 each): dense 92.31 ±
0.11 %, bdwp 2:8 91.75 ± 0.22 % (2 seeds); seed 0 only: srste 2:8 91.88, bimask 2:8 91.47, bdwp
1:4 91.38, 2:4 91.99, 4:8 92.00, 1:8 90.82 %.
Runtime (wall_time_s of those runs): dense 56-57 s, sparse 64-73 s per run.

``:full`` is the 200-epoch recipe (issue 14): batch 128, SGD momentum 0.9 (no Nesterov), LR 0.1
cosine to 0 without warm-up, weight decay 5e-4, crop+flip, no label smoothing. Its sweep is
dense/bdwp 2:8, srste/bimask 2:8 x 3 seeds, the bdwp ratio ablation {1:4, 2:4, 4:8, 1:8} x 2
seeds and bdwp 2:8 with mask_every 10 and 100:
  python -m experiments.sweep --config configs/resnet18_cifar10.py:full --workdir_root runs \
      --results_dir results/runs --gpus N --set data.data_dir=./data
Expected dense test accuracy: ~95 % (kuangliu/pytorch-cifar, 200 epochs). Measured (results/runs,
one NVIDIA H200, git 0fbb4e1; bdwp seed 2 and mask_every 10 git 6423cb4; srste git 8e0039d; bimask
git 386eea7; bdwp 1:4 git 3f1bce2; bdwp 2:4 and 4:8 seed 0 git 56219f2; bdwp 4:8 seed 1 and 1:8 git
a8004f3; mask_every 100 git 15d18e9): dense 94.83 +- 0.13 % (seeds 0-2), bdwp 2:8 94.95 +- 0.02 %
(seeds 0-2), srste 2:8 94.85 +- 0.09 % (seeds 0-2), bimask 2:8 94.57 +- 0.15 % (seeds 0-2), bdwp 2:8
mask_every 10 94.71 % (seed 0), mask_every 100 94.84 % (seed 0, 440 s, nearly all alone), bdwp 1:4
94.85 +- 0.11 % (seeds 0-1), bdwp 2:4 94.91 +- 0.07 % (seeds 0-1), bdwp 4:8 94.73 +- 0.07 % (seeds
0-1), bdwp 1:8 94.57 +- 0.06 % (seeds 0-1). Runtime: dense 489-513 s, bdwp 2:8 462-600 s, srste
406-479 s, bimask 527-533 s, bdwp 1:4 479-520 s, bdwp 2:4 465-502 s, bdwp 4:8 532 s, bdwp 1:8 506 s
per run, two runs sharing the GPU (406-533 s under MPS); bimask seed 2 alone 373 s, bdwp 4:8 alone
without MPS 331 s, bdwp 1:8 seed 1 393 s (alone from epoch 76).
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, base.VARIANTS)
  c = base.base_config()
  c.name = "resnet18_cifar10"
  c.model = "resnet18"
  c.model_kwargs.stem = "cifar"
  c.epochs = 20
  c.learning_rate = 0.4
  c.warmup_epochs = 4.0
  c.sweep = base.METHODS_SWEEP + base.RATIO_SWEEP
  if arg == "full":
    base.full_sgd_recipe(c)
    c.sweep = base.FULL_TABLE + base.FULL_BASELINES + base.FULL_RATIO + base.FULL_MASK_EVERY
  if arg == "smoke":
    base.smoke(c, dict(width=8, stem="cifar", stage_sizes=(1, 1)))
  return c
