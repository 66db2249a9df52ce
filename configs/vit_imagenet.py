"""ViT-S/8 (width 384, depth 12, 6 heads) on downsampled ImageNet 64x64 from TFDS (64 tokens).

Data as configs/resnet50_imagenet.py (in device memory: `imagenet_resized/64x64` or an image-folder
subset). Command:
  python -m experiments.main --config configs/vit_imagenet.py --workdir runs/vit_in64 \
      --config.data.data_dir=~/tensorflow_datasets --config.method=bdwp --config.pattern=2:8
Schedule: 90 epochs, batch 1024, AdamW peak LR 1e-3 (warm-up 5 epochs, cosine), weight decay 0.05,
clip 1.0, LS 0.1.
Expected test accuracy: not yet measured. Runtime: not yet measured.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "vit_imagenet"
  c.model = "vit"
  c.model_kwargs.patch = 8
  c.model_kwargs.width = 384
  c.model_kwargs.depth = 12
  c.model_kwargs.heads = 6
  c.model_kwargs.mlp_ratio = 4
  c.data.source = "tfds"
  c.data.name = "imagenet_resized/64x64"
  c.data.data_dir = ""
  c.data.num_classes = 1000
  c.data.image_size = 64
  c.data.crop_padding = 8
  c.data.test_split = "validation"
  c.epochs = 90
  c.batch_size = 1024
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.schedule = "cosine"
  c.warmup_epochs = 5.0
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  c.checkpoint_every_steps = 2000
  if arg == "smoke":
    base.smoke(c, dict(patch=8, width=16, depth=2, heads=2, mlp_ratio=2))
    c.data.image_size = 64
  return c
