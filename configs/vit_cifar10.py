"""ViT-S/4-class model on CIFAR-10 (patch 4, width 384, 6 heads, depth 6, MLP 1536, mean-pooled
tokens): AdamW, warm-up + cosine, label smoothing, bf16.

Command:
  python -m experiments.main --config configs/vit_cifar10.py --workdir runs/vit \
      --config.method=bdwp --config.pattern=2:8 --config.data.data_dir=./data
Schedule: 35 epochs, batch 512, peak LR 1e-3 (warm-up 5 epochs), weight decay 0.05, clip 1.0.
Depth 6 (not ViT-S's 12) keeps the issue-5 sweep inside its GPU budget; --config.model_kwargs.depth=12
gives the full ViT-S/4. The sweep adds srste/bimask 2:8 (issue 5).
Expected test accuracy (measured, results/runs, one NVIDIA H100 80GB HBM3 each): dense 80.37 ±
0.50 %, bdwp 2:8 82.44 ± 0.33 % (2 seeds); seed 0 only: srste 2:8 81.90, bimask 2:8 81.64 %.
Runtime (wall_time_s of those runs): dense 74 s, sparse 77-88 s per run.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "vit_cifar10"
  c.model = "vit"
  c.model_kwargs.patch = 4
  c.model_kwargs.width = 384
  c.model_kwargs.depth = 6
  c.model_kwargs.heads = 6
  c.model_kwargs.mlp_ratio = 4
  c.epochs = 35
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.schedule = "cosine"
  c.warmup_epochs = 5.0
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  c.sweep = base.METHODS_SWEEP
  if arg == "smoke":
    base.smoke(c, dict(patch=4, width=16, depth=2, heads=2, mlp_ratio=2))
  return c
