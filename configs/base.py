"""Shared config defaults and helpers for the ``configs/*.py`` files.

Fields every run config has:
  name, model, model_kwargs          model registry name and its constructor fields
  data.{source,name,data_dir,num_classes,image_size,channels,crop_padding,flip,test_split,
      synthetic_train,synthetic_test,synthetic_seed}
      train_limit/test_limit: first n examples of a split (0 = all), per class if limit_stratified
      pipeline: "device" (whole uint8 dataset on every device, augmentation under jit) or "stream"
      (sources folder | arrayrecord | tfds read per process on Grain, host decode + Inception crop
      and flip, eval resize + centre crop of crop_fraction; iterator state in the checkpoint);
      stream fields: on_corrupt ("skip" | "fail" on an undecodable image, logged with its path),
      num_workers (decode processes, 0 = in the trainer), prefetch (batches on the devices ahead
      of the step, >= 2 recommended), min_scale (smallest random-resized-crop area)
      device_memory_limit_mb: device path's dataset budget (0 = half the memory the device reports;
      no check where it reports none, e.g. CPU)
  method, pattern, sr_ste_lambda, implementation, rules, mask_every   sparsity (rules: ordered
      (regex, "dense" | "default" | "N:M"), first match wins, "default" = the run's pattern;
      mask_every: recompute the masks every that many steps, 1 = every step)
  bimask_candidates, bimask_refresh   bimask only: random permutations tried per search, and steps
      between searches (Bi-Mask's --greedy_num and --iter)
  bimask_search   bimask only: "marked_calls" (the runner compiles a second train step and computes
      the search only at the steps that refresh) or "every_call" (every step computes it; the
      layers' default); the same permutations either way (nmsparse/prune/permutation.py)
  seed, epochs, batch_size, eval_batch_size, dtype
  optimizer, learning_rate, schedule, warmup_epochs, initial_lr_fraction (onecycle start),
      momentum, nesterov (sgd), b1, b2 (adamw), weight_decay, label_smoothing, grad_clip
  checkpoint_every_steps, keep_checkpoints, log_every_steps, eval_every_epochs,
      track_mask_flips, progress_bar, tensorboard, results_dir, num_devices, distributed
  allow_config_change: resume a workdir whose recorded run-defining fields differ (SPEC §4)
  sweep: a list of {methods, patterns, seeds} grids that experiments.sweep expands (a grid may add
      mask_every: [k, ...] to run each point once per value)
  augment.{cutout, randaugment_ops, randaugment_magnitude, mixup_alpha, cutmix_alpha,
      mix_switch_prob}   on-device recipe augmentations, all off by default (InputSpec)
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict

from nmsparse.models import DEFAULT_DENSE

CIFAR_DATA_DIR = "./data"

# Issue 5's CIFAR-10 table: dense and bdwp 2:8 over two seeds for every model.
TABLE_SWEEP = [dict(methods=["dense", "bdwp"], patterns=["2:8"], seeds=[0, 1])]
# ResNet18 and ViT add srste/bimask at 2:8 (one seed); ResNet18 adds the ratio ablation.
METHODS_SWEEP = TABLE_SWEEP + [dict(methods=["srste", "bimask"], patterns=["2:8"], seeds=[0])]
RATIO_SWEEP = [dict(methods=["bdwp"], patterns=["1:4", "2:4", "4:8", "1:8"], seeds=[0])]

# Issue 14's runs of the ``:full`` recipes, all CIFAR-10: dense and bdwp 2:8 over three seeds for
# every model; srste/bimask 2:8 over three seeds (ResNet18, ViT) or one (the others); the bdwp
# ratio ablation over two seeds (ResNet18, ViT); bdwp 2:8 with mask_every 10 and 100 (ResNet18).
FULL_TABLE = [dict(methods=["dense", "bdwp"], patterns=["2:8"], seeds=[0, 1, 2])]
FULL_BASELINES_ONE_SEED = [dict(methods=["srste", "bimask"], patterns=["2:8"], seeds=[0])]
FULL_BASELINES = [dict(methods=["srste", "bimask"], patterns=["2:8"], seeds=[0, 1, 2])]
FULL_RATIO = [dict(methods=["bdwp"], patterns=["1:4", "2:4", "4:8", "1:8"], seeds=[0, 1])]
FULL_MASK_EVERY = [dict(methods=["bdwp"], patterns=["2:8"], seeds=[0], mask_every=[10, 100])]
VARIANTS = ("", "smoke", "full")


def default_rules() -> tuple[tuple[str, str], ...]:
  """Stem conv / patch embedding and classifier dense, everything else the run's pattern."""
  return tuple((regex, "dense") for regex in DEFAULT_DENSE) + ((".*", "default"),)


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every config (a CIFAR-10 SGD run); model configs override."""
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.model = "resnet18"
  c.model_kwargs = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(
      source="arrays", name="cifar10", data_dir=CIFAR_DATA_DIR, num_classes=10, image_size=32,
      channels=3, crop_padding=4, flip=True, synthetic_train=512, synthetic_test=256,
      test_split="test", synthetic_seed=0, train_limit=0, test_limit=0, limit_stratified=True,
      pipeline="device", on_corrupt="fail", num_workers=0, prefetch=2, crop_fraction=0.875,
      min_scale=0.08, device_memory_limit_mb=0.0))
  c.method = "bdwp"
  c.pattern = config_dict.placeholder(str)
  c.pattern = "2:8"
  c.sr_ste_lambda = 2e-4
  c.implementation = config_dict.placeholder(str)
  c.rules = default_rules()
  c.mask_every = 1
  c.bimask_candidates = 10  # Bi-Mask's CIFAR default (--greedy_num)
  c.bimask_refresh = 100  # Bi-Mask's default (--iter): steps between permutation searches
  c.bimask_search = "marked_calls"
  c.seed = 0
  c.epochs = 30
  c.batch_size = 512
  c.eval_batch_size = 1000
  c.dtype = "bfloat16"
  c.optimizer = "sgd"
  c.learning_rate = 0.2
  c.schedule = "onecycle"
  c.warmup_epochs = 5.0
  c.initial_lr_fraction = 0.1
  c.momentum = 0.9
  c.nesterov = True
  c.b1 = 0.9
  c.b2 = 0.999
  c.weight_decay = 5e-4
  c.label_smoothing = 0.1
  c.grad_clip = 0.0
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2
  c.log_every_steps = 50
  c.eval_every_epochs = 1
  c.track_mask_flips = True
  c.progress_bar = True
  c.tensorboard = True
  c.results_dir = ""
  c.num_devices = 0
  c.distributed = False
  c.allow_config_change = False
  c.sweep = TABLE_SWEEP
  c.augment = ml_collections.ConfigDict(dict(
      cutout=0, randaugment_ops=0, randaugment_magnitude=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
      mix_switch_prob=0.5))
  return c


def cifar100(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches a CIFAR-10 config to CIFAR-100 (same layout: ``data_dir/cifar100/*.npy``)."""
  c.name = c.name.replace("cifar10", "cifar100")
  c.data.name = "cifar100"
  c.data.num_classes = 100
  return c


def smoke(c: ml_collections.ConfigDict, model_kwargs: dict[str, Any]) -> ml_collections.ConfigDict:
  """Shrinks a config for tests: tiny model, synthetic data, 1 epoch of 2 steps, no TB/progress."""
  c.name = c.name + "_smoke"
  c.model_kwargs = ml_collections.ConfigDict(model_kwargs)
  c.data.source = "synthetic"
  c.data.data_dir = ""  # synthetic data reads no files; a data_dir given with it is an error
  c.data.synthetic_train = 16
  c.data.synthetic_test = 8
  c.epochs = 1
  c.batch_size = 8
  c.eval_batch_size = 8
  c.dtype = "float32"
  c.warmup_epochs = 0.5
  c.checkpoint_every_steps = 1
  c.log_every_steps = 1
  c.progress_bar = False
  c.tensorboard = False
  c.sweep = [dict(methods=["dense", "bdwp"], patterns=["2:8"], seeds=[0])]
  return c


def full_sgd_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The 200-epoch CIFAR recipe of kuangliu/pytorch-cifar (ResNet18/50, VGG19 ``:full``): batch
  128, SGD momentum 0.9 without Nesterov, LR 0.1 with cosine decay and no warm-up, no LS."""
  full_name(c)
  c.epochs = 200
  c.batch_size = 128
  c.learning_rate = 0.1
  c.schedule = "cosine"
  c.warmup_epochs = 0.0
  c.nesterov = False
  c.label_smoothing = 0.0
  return c


def imagenet224(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet at 224 px from an image folder (``DIR/train/<class>/*``, ``DIR/val/<class>/*``)
  through the streaming pipeline (14 decode workers: 16 cores less the trainer and the prefetch
  thread; a bad file among 1.28M is logged with its path and skipped)."""
  c.data.source = "folder"
  c.data.pipeline = "stream"
  c.data.num_workers = 14
  c.data.prefetch = 2
  c.data.on_corrupt = "skip"
  c.data.name = "imagenet"
  c.data.data_dir = ""
  c.data.num_classes = 1000
  c.data.image_size = 224
  c.data.crop_padding = 0
  c.data.test_split = "val"
  c.eval_batch_size = 500
  c.label_smoothing = 0.1
  c.checkpoint_every_steps = 2000
  c.sweep = [dict(methods=["dense", "bdwp"], patterns=["2:4", "2:8"], seeds=[0])]
  return c


def speed(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``:speed``: synthetic 224 px images in device memory, batch 256, one epoch, no bookkeeping:
  for step-time runs only (accuracy is meaningless)."""
  c.name += "_speed"
  c.data.source = "synthetic"
  c.data.pipeline = "device"
  c.data.synthetic_train = 1024
  c.data.synthetic_test = 256
  c.batch_size = 256
  c.epochs = 1
  c.track_mask_flips = False
  c.progress_bar = False
  c.tensorboard = False
  return c


def full_name(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Names a ``:full`` recipe's runs apart from the default variant's (workdirs, results)."""
  c.name = c.name + "_full"
  return c


def parse_arg(arg: str | None, allowed: Sequence[str] = ("", "smoke")) -> str:
  arg = arg or ""
  if arg not in allowed:
    raise ValueError(f"Unknown config argument {arg!r}; use one of {list(allowed)}.")
  return arg
