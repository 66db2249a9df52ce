#!/usr/bin/env bash
# Issue 5 on one machine with 4 GPUs, across several device calls (each at most 10 minutes):
#   call 1 (carry .whl, .data/cifar10/part-a): bash scripts/gpu_issue5.sh start
#       starts the pipeline in its own session: speed table (one model per GPU, synthetic images),
#       data-parallel throughput of ResNet18 on 1/2/4 GPUs, then the CIFAR-10 accuracy sweep once
#       the data is unpacked.
#   call 2 (carry .data/cifar10/part-b, .data/unpack.py): bash scripts/gpu_issue5.sh unpack-and-wait 540
#   later calls: bash scripts/gpu_issue5.sh wait 560
# Every call packs what exists so far into $OUT/results.tgz (results and the logs' tails).
# Results are written under /tmp/issue5/results, outside the repository: each device call re-copies
# the working tree and drops files the local checkout lacks, which once deleted results written
# into the repository's results/ between two calls.
set -uo pipefail
state=/tmp/issue5
results=$state/results
mkdir -p "$results/speed" "$results/runs"

pack() {
  mkdir -p "$state/tails"
  for f in "$state"/*.log; do [ -f "$f" ] && tail -c 20000 "$f" > "$state/tails/$(basename "$f")"; done
  tar czf "$OUT/results.tgz" -C "$state" results tails 2>/dev/null
  echo "--- status $(date +%T): $(ls "$results/runs" | wc -l) run results, speed files:" \
       "$(ls "$results/speed" | tr '\n' ' ')"
  [ -f "$state/done" ] && echo "PIPELINE DONE"
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  tail -n 5 "$state/sweep.log" 2>/dev/null
}

wait_for() {  # wait up to $1 seconds for the pipeline, then pack
  local deadline=$((SECONDS + $1))
  while [ ! -f "$state/done" ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
  pack
}

pipeline() {
  source scripts/gpu_env.sh
  speed() {
    CUDA_VISIBLE_DEVICES=$1 python3 scripts/speed.py measure --config "configs/$2_cifar10.py" \
      --set data.source=synthetic --set data.synthetic_train=8192 --out "$results/speed/$2.json" > "$state/speed_$2.log" 2>&1
  }
  (speed 0 vit; speed 0 resnet9) & (speed 1 resnet50) & (speed 2 resnet18) & (speed 3 vgg19) &
  wait
  python3 scripts/speed.py merge --inputs "$results/speed/*.json" --out_dir "$results" \
    > "$state/speed_merge.log" 2>&1
  python3 scripts/step_time.py --config configs/resnet18_cifar10.py --num_devices 1,2,4 \
    --set data.source=synthetic --set data.synthetic_train=8192 --out "$results/dp_resnet18.json" > "$state/dp.log" 2>&1
  while [ ! -f "$state/unpacked" ]; do sleep 2; done
  RESULTS_DIR="$results/runs" bash scripts/cifar10_table.sh 4 .data/unpacked /tmp/runs \
    > "$state/sweep.log" 2>&1
  touch "$state/done"
}

case "${1:-}" in
  start)
    nvidia-smi -L
    setsid nohup bash "$0" pipeline > "$state/pipeline.log" 2>&1 < /dev/null &
    sleep 20; pack ;;
  pipeline) pipeline ;;
  unpack-and-wait)
    python3 .data/unpack.py --out .data/unpacked --src .data/cifar10 && touch "$state/unpacked"
    wait_for "${2:-540}" ;;
  wait) wait_for "${2:-560}" ;;
  *) echo "usage: $0 start | unpack-and-wait SECONDS | wait SECONDS" >&2; exit 2 ;;
esac
