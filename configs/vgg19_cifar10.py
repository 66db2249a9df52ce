"""VGG19 with batch norm on CIFAR-10: SGD nesterov, one-cycle, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/vgg19_cifar10.py --workdir runs/vgg19 \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 25 epochs, batch 512, peak LR 0.2 (warm-up 5 epochs, linear decay).
Expected test accuracy (measured, results/runs, 2 seeds, one NVIDIA H100 80GB HBM3 each):
dense 91.17 ± 0.24 %, bdwp 2:8 91.10 ± 0.23 %.
Runtime (wall_time_s of those runs): dense 53-54 s, bdwp 2:8 65-69 s per run.

``:full`` is the 200-epoch recipe (issue 14): batch 128, SGD momentum 0.9 (no Nesterov), LR 0.1
cosine to 0 without warm-up, weight decay 5e-4, crop+flip, no label smoothing. Its sweep is
dense/bdwp 2:8 x 3 seeds, srste/bimask 2:8 x 1 seed:
  python -m experiments.sweep --config configs/vgg19_cifar10.py:full --workdir_root runs \
      --results_dir results/runs --gpus N --set data.data_dir=./data
Expected dense test accuracy: ~93.9 % (VGG19-BN, 200 epochs, public CIFAR-10 results). Measured
(results/runs, one NVIDIA H200, seeds 0-2): dense 93.43 +- 0.17 %, bdwp 2:8 93.27 +- 0.28 %; seed 0:
srste 2:8 93.44 %, bimask 2:8 93.41 % (git 68e49cb).
Runtime: seed 0 310 s (dense) and 341 s (bdwp) per run, each sharing the GPU with a ViT run; seed 1
and srste 671-776 s, three runs sharing the GPU; seed 2 482 s (dense) and 527 s (bdwp), sharing it
with each other (bdwp its last minute with the Bi-Mask run). bimask with its search in every step
(git f532f65): 12 s an epoch alone on the GPU (about 40 min a run; not finished); the runner now
searches only at the refresh steps (bimask_search="marked_calls"): 1.33-1.54 s an epoch alone on
the H200 against bdwp's 1.28-1.32 s (synthetic data, git 5ca5828, benchmarks/h200_bimask/); the
committed bimask run took 602 s sharing the GPU with a ViT run.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, base.VARIANTS)
  c = base.base_config()
  c.name = "vgg19_cifar10"
  c.model = "vgg19"
  c.epochs = 25
  c.learning_rate = 0.2
  c.warmup_epochs = 5.0
  if arg == "full":
    base.full_sgd_recipe(c)
    c.sweep = base.FULL_TABLE + base.FULL_BASELINES_ONE_SEED
  if arg == "smoke":
    base.smoke(c, dict(layers=(8, "M", 8, 16, "M", 16, "M")))
  return c
