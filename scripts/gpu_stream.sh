#!/usr/bin/env bash
# Issue 12's GPU measurement in one call: generates 20k ImageNet-sized JPEGs (500x375, 100 classes)
# on the machine, then measures the streaming pipeline's images/s at 224 px with 14 decode
# processes, and the ResNet50 and ViT-B/16 (224 px, bdwp 2:4, bf16) train steps on one GPU: fixed
# device batch vs streamed, and the streamed share of time waiting for input.
#   bash scripts/gpu_stream.sh [OUT_JSON]        (default results/stream_throughput.json)
# The GPU image (python 3.12) lacks grain: put its wheels and the two dependencies it lacks in .whl/
# first and carry .whl with the command (gpu_env.sh installs them):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
#     grain array-record cloudpickle portpicker ml-collections
set -euo pipefail
out=${1:-results/stream_throughput.json}
source scripts/gpu_env.sh
nvidia-smi -L
python3 -c "import grain" || { echo "grain is not importable: see the header of $0"; exit 1; }
python3 scripts/stream_throughput.py --data_dir /tmp/stream_jpegs --num_images 20000 \
  --classes 100 --jpeg_size 500x375 --image_size 224 --workers 14 --batch 256 --steps 30 \
  --configs configs/resnet50_imagenet224.py --configs configs/vit_b16_imagenet224.py \
  --set method=bdwp --set pattern=2:4 --set dtype=bfloat16 --out "$out"
cat "$out"
