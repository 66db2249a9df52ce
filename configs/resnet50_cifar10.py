"""ResNet50 (bottlenecks, CIFAR stem) on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/resnet50_cifar10.py --workdir runs/resnet50 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 15 epochs, batch 512, peak LR 0.4 (warm-up 3 epochs, linear decay).
Expected test accuracy (measured, results/runs, 2 seeds, one NVIDIA H100 80GB HBM3 each):
dense 90.46 ± 0.27 %, bdwp 2:8 89.94 ± 0.61 %.
Runtime (wall_time_s of those runs): dense 114-123 s, bdwp 2:8 134-139 s per run.

``:full`` is the 200-epoch recipe (issue 14): batch 128, SGD momentum 0.9 (no Nesterov), LR 0.1
cosine to 0 without warm-up, weight decay 5e-4, crop+flip, no label smoothing. Its sweep is
dense/bdwp 2:8 x 3 seeds, srste/bimask 2:8 x 1 seed:
  python -m experiments.sweep --config configs/resnet50_cifar10.py:full --workdir_root runs \
      --results_dir results/runs --gpus N --set data.data_dir=./data
Expected dense test accuracy: ~95 % (kuangliu/pytorch-cifar, 200 epochs). Measured (results/runs,
one NVIDIA H200, git af7c9ce; seed 1 git 87a4b5b; bdwp seed 0 git 8e0039d; seed 2 git 3f1bce2; bdwp
seed 1 git 56219f2; bdwp seed 2 git a8004f3; srste git 15d18e9; bimask git b8687d7): dense 95.32 +-
0.10 % (seeds 0-2: 95.36, 95.21, 95.40), bdwp 2:8 95.19 +- 0.13 % (seeds 0-2: 95.16, 95.33, 95.07),
srste 2:8 95.15 % (seed 0), bimask 2:8 94.90 % (seed 0). Runtime: dense 1065 and 1187 s, each
sharing the GPU under CUDA MPS with ViT runs (median epoch 4.56 and 5.25 s), and 1071 s next to
ResNet18 runs (4.74 s); bdwp 1238, 1166 and 1226 s next to ResNet18 runs (median epoch 5.35, 5.31
and 5.31 s); srste 1068 s next to ViT runs (4.61 s); bimask 1366 s next to ViT runs (5.79 s).
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, base.VARIANTS)
  c = base.base_config()
  c.name = "resnet50_cifar10"
  c.model = "resnet50"
  c.model_kwargs.stem = "cifar"
  c.epochs = 15
  c.learning_rate = 0.4
  c.warmup_epochs = 3.0
  if arg == "full":
    base.full_sgd_recipe(c)
    c.sweep = base.FULL_TABLE + base.FULL_BASELINES_ONE_SEED
  if arg == "smoke":
    base.smoke(c, dict(width=8, stem="cifar", stage_sizes=(1, 1)))
  return c
