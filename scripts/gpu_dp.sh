#!/usr/bin/env bash
# One device call on a multi-GPU host: data-parallel scaling of ResNet18 BDWP 2:8 (pallas), weak
# scaling at 512 images per GPU, with diagnosis. Each variant is its own process (XLA_FLAGS are read
# once per process); every process measures its own 1-GPU baseline. DP_VARIANTS picks variants.
#   bash scripts/gpu_dp.sh            (needs .whl carried; writes under $OUT, default ./gpu_out)
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source scripts/gpu_env.sh || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/device.txt"
nvidia-smi topo -m >> "$OUT/device.txt" 2>&1
export NMSPARSE_GIT_SHA=${GIT_SHA:-unknown}
ngpu=$(nvidia-smi -L | wc -l); counts=1,2,4; [ "$ngpu" -lt 4 ] && counts=1,$ngpu
common=(--config configs/resnet18_cifar10.py --set data.source=synthetic
        --set data.synthetic_train=8192 --without_data=false --steps 60)
run() {  # name, time cap s, XLA_FLAGS, device counts, extra flags
  echo "== $1: XLA_FLAGS='$3'" >> "$OUT/dp.log"
  XLA_FLAGS="$3" timeout "$2" python3 scripts/step_time.py "${common[@]}" --num_devices "$4" \
    --out "$OUT/dp_$1.json" "${@:5}" >> "$OUT/dp.log" 2>&1 || echo "$1 failed: rc $?" >> "$OUT/dp.log"
}
CMDBUF="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,COLLECTIVES \
--xla_gpu_graph_min_graph_size=1"
for v in ${DP_VARIANTS:-baseline lhs_small_buckets cmdbuf}; do
  case $v in
    baseline) run baseline "${DP_CAP1:-300}" "" "$counts" --probes;;
    baseline_14) run baseline_14 "${DP_CAP2:-240}" "" "1,${counts##*,}";;
    lhs_small_buckets) run lhs_small_buckets "${DP_CAP2:-240}" \
      "--xla_gpu_enable_latency_hiding_scheduler=true \
--xla_gpu_all_reduce_combine_threshold_bytes=4194304" "1,${counts##*,}";;
    cmdbuf) run cmdbuf "${DP_CAP2:-240}" "$CMDBUF" "1,${counts##*,}";;  # CUDA graphs: fewer launches
    processes) run processes "${DP_CAP2:-240}" "" "1,${counts##*,}" --processes "${counts##*,}";;
  esac
done
grep -E "^==|^devices|^ +[0-9]+ +[0-9]+ |failed|Error" "$OUT/dp.log" | grep -v "^I1" | head -n 30
