#!/usr/bin/env bash
# Regenerates results/speed.{json,md} and results/accuracy.md + plots from the committed run files.
#   bash scripts/make_reports.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python scripts/speed.py merge --inputs 'results/speed/*.json' --out_dir results > /dev/null
python -m experiments.report results/runs --out results \
  --not_run "resnet9_cifar100, vgg19_cifar100, resnet18_cifar100, resnet50_cifar100, vit_cifar100=CIFAR-100 is not available on these machines (see ../shared/data/README.md); the configs run where the data exists" \
  --not_run "resnet50_imagenet, vit_imagenet=ImageNet is not available on these machines" \
  --planned configs/resnet9_cifar10.py:full --planned configs/vgg19_cifar10.py:full \
  --planned configs/resnet18_cifar10.py:full --planned configs/resnet50_cifar10.py:full \
  --planned configs/vit_cifar10.py:full
