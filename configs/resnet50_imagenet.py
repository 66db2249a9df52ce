"""ResNet50 (ImageNet stem: 7x7/2 conv + max pool) on downsampled ImageNet 64x64 from TFDS.

The runner keeps the whole uint8 training set in device memory, so ImageNet-scale runs use
`imagenet_resized/64x64` (about 15.7 GB, prepared with `tfds build imagenet_resized/64x64`; needs
tensorflow-datasets) or, with --config.data.source=folder, an image-folder subset
(DIR/train/<class>/*, DIR/val/<class>/*). Full-resolution ImageNet does not fit this pipeline.
Command:
  python -m experiments.main --config configs/resnet50_imagenet.py --workdir runs/r50_in64 \
      --config.data.data_dir=~/tensorflow_datasets --config.method=bdwp --config.pattern=2:8
Schedule: 30 epochs, batch 1024, SGD nesterov, peak LR 0.4, one-cycle (warm-up 3), LS 0.1.
Expected test accuracy: not yet measured. Runtime: not yet measured.
"""

from configs import base


def get_config(arg: str | None = None):
  arg = base.parse_arg(arg)
  c = base.base_config()
  c.name = "resnet50_imagenet"
  c.model = "resnet50"
  c.model_kwargs.stem = "imagenet"
  c.data.source = "tfds"
  c.data.name = "imagenet_resized/64x64"
  c.data.data_dir = ""
  c.data.num_classes = 1000
  c.data.image_size = 64
  c.data.crop_padding = 8
  c.data.test_split = "validation"
  c.epochs = 30
  c.batch_size = 1024
  c.eval_batch_size = 1000
  c.learning_rate = 0.4
  c.warmup_epochs = 3.0
  c.weight_decay = 5e-5
  c.checkpoint_every_steps = 2000
  if arg == "smoke":
    base.smoke(c, dict(width=8, stem="imagenet", stage_sizes=(1, 1)))
    c.data.image_size = 64
  return c
