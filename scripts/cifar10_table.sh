#!/usr/bin/env bash
# The issue-5 CIFAR-10 sweep (28 runs: 5 models x {dense, bdwp 2:8} x 2 seeds, srste/bimask 2:8 for
# ResNet18 and ViT, bdwp {1:4, 2:4, 4:8, 1:8} for ResNet18), one run per GPU, longest configs first.
# Finished runs are skipped and unfinished ones resume, so it can be re-run after an interruption.
#   bash scripts/cifar10_table.sh GPUS DATA_DIR WORKDIR_ROOT [more experiments.sweep flags]
# e.g. bash scripts/cifar10_table.sh 4 ./data /tmp/runs --set epochs=10 (results JSON go to
# $RESULTS_DIR, default results/runs)
set -euo pipefail
gpus=${1:?number of GPUs}; data_dir=${2:?data dir holding cifar10/*.npy}; root=${3:?workdir root}
shift 3
source scripts/gpu_env.sh
python3 -m experiments.sweep \
  --config configs/vit_cifar10.py --config configs/resnet50_cifar10.py \
  --config configs/resnet18_cifar10.py --config configs/vgg19_cifar10.py \
  --config configs/resnet9_cifar10.py \
  --workdir_root "$root" --results_dir "${RESULTS_DIR:-results/runs}" --gpus "$gpus" \
  --set data.data_dir="$data_dir" "$@"
