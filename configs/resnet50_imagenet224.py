"""ResNet50 (ImageNet stem) on ImageNet at 224 px, streamed (data.pipeline="stream").

Variants: `:speed` (synthetic 224 px images in device memory, for step-time runs; accuracy is
meaningless) and `:smoke` (tiny, synthetic, device pipeline, for tests). The full-data recipe is
SR-STE's (120 epochs, batch 1024 = their 256 x 4 with the LR scaled linearly, SGD nesterov, peak LR
0.4, 5 warm-up epochs, cosine decay, weight decay 1e-4, label smoothing 0.1); input is Inception
random-resized crop + flip for training, resize + 0.875 centre crop for eval, decoded by 14 Grain
worker processes per host.
Measured: the streaming pipeline's correctness on CPU (tests/data/test_stream.py: order, shards,
resume, corrupt files), and on one NVIDIA H200 host (results/stream_throughput.json, git 6da49c8)
14 workers decode 13.4k images/s of generated 500x375 JPEGs against the 6.3-6.8k images/s this
config's BDWP 2:4 bf16 step trains at batch 256 (input wait 0.07 %). Not measured: accuracy (no
ImageNet here).
Training command (an image folder DIR/train/<class>/*, DIR/val/<class>/*):
  python -m experiments.main --config configs/resnet50_imagenet224.py --workdir runs/r50_224 \
      --config.data.data_dir=DIR --config.method=bdwp --config.pattern=2:4
Speed command (one GPU):
  python scripts/step_time.py --config configs/resnet50_imagenet224.py:speed \
      --set method=bdwp --set pattern=2:4 --set implementation=sparse_tc
Expected test accuracy: not measured (no ImageNet here). Step time: see results/speed_sptc.md.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg, ("", "speed", "smoke"))
  c = base.base_config()
  c.name = "resnet50_imagenet224"
  c.model = "resnet50"
  c.model_kwargs.stem = "imagenet"
  base.imagenet224(c)
  c.epochs = 120
  c.batch_size = 1024
  c.learning_rate = 0.4
  c.schedule = "cosine"
  c.warmup_epochs = 5.0
  c.weight_decay = 1e-4
  if arg == "speed":
    base.speed(c)
  if arg == "smoke":
    base.smoke(c, dict(width=8, stem="imagenet", stage_sizes=(1, 1)))
    c.data.pipeline = "device"
    c.data.image_size = 64
  return c
