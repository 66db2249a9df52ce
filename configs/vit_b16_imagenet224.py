"""ViT-B/16 (width 768, depth 12, 12 heads, 196 tokens) on ImageNet at 224 px, streamed.

Variants: `:speed` (synthetic 224 px images in device memory, for step-time runs; accuracy is
meaningless) and `:smoke` (tiny, synthetic, device pipeline, for tests). The full-data recipe is
DeiT-style (300 epochs, batch 1024, AdamW peak LR 1e-3 = 5e-4 x 1024/512 with 5 warm-up epochs and
cosine decay, weight decay 0.05, label smoothing 0.1, clip 1.0) with Inception crop + flip only:
DeiT's RandAugment, Mixup/CutMix, random erasing, repeated augmentation and stochastic depth are
not implemented, so expect less than DeiT-B's 81.8%.
Measured: the streaming pipeline's correctness on CPU (tests/data/test_stream.py), and on one
NVIDIA H200 host (results/stream_throughput.json, git 6da49c8) 14 workers decode 13.4k images/s
of generated 500x375 JPEGs against the 3.4-3.5k images/s this config's BDWP 2:4 bf16 step trains
at batch 256 (input wait 0.03 %). Not measured: accuracy (no ImageNet here).
Training command (an image folder DIR/train/<class>/*, DIR/val/<class>/*):
  python -m experiments.main --config configs/vit_b16_imagenet224.py --workdir runs/vitb16 \
      --config.data.data_dir=DIR --config.method=bdwp --config.pattern=2:4
Speed command (one GPU):
  python scripts/step_time.py --config configs/vit_b16_imagenet224.py:speed \
      --set method=bdwp --set pattern=2:4 --set implementation=sparse_tc
Expected test accuracy: not measured (no ImageNet here). Step time: see results/speed_sptc.md.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, ("", "speed", "smoke"))
  c = base.base_config()
  c.name = "vit_b16_imagenet224"
  c.model = "vit"
  c.model_kwargs.patch = 16
  c.model_kwargs.width = 768
  c.model_kwargs.depth = 12
  c.model_kwargs.heads = 12
  c.model_kwargs.mlp_ratio = 4
  c.model_kwargs.attention = "auto"
  base.imagenet224(c)
  c.epochs = 300
  c.batch_size = 1024
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.schedule = "cosine"
  c.warmup_epochs = 5.0
  c.weight_decay = 0.05
  c.grad_clip = 1.0
  if arg == "speed":
    base.speed(c)
  if arg == "smoke":
    base.smoke(c, dict(patch=16, width=32, depth=1, heads=2, mlp_ratio=2, attention="einsum"))
    c.data.pipeline = "device"
    c.data.image_size = 32
  return c
