#!/usr/bin/env bash
# One device call on one GPU: is the table's batch-128 train step limited by the host? On the H200
# (benchmarks/h200_seed_batch/), ResNet18 :full BDWP 2:8 took 5.43 ms a step with the host busy
# 5.31 ms of it in each step(...) call; results/dp measured ~3.4 ms of host per step at batch 512.
# Each variant is its own process (XLA_FLAGS are read once per process): dense and BDWP 2:8 with
# the default flags, BDWP on the XLA path instead of Pallas, and both under CUDA graphs for every
# kind of op (fewer launches from the host), all on synthetic data of CIFAR-10's shape. Not by
# default: bdwp_every100 (mask_every=100: masks from a kernel snapshot; pallas runs the xla prune
# and products for it under every card's rule so far), bdwp_every100_xla, and
# bdwp_every100_fused (pallas's fused prune pass ranking the snapshot, --card_rule
# fused_mask_source=true), against bdwp: what the snapshot path costs, and whether the fused pass
# earns the card rule.
#   bash scripts/gpu_host.sh     (needs .whl carried; writes under $OUT, default ./gpu_out)
#   HOST_VARIANTS="dense bdwp" HOST_CONFIG=configs/resnet18_cifar10.py:full bash scripts/gpu_host.sh
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source scripts/gpu_env.sh || exit 1
export NMSPARSE_GIT_SHA=${GIT_SHA:-unknown}
config=${HOST_CONFIG:-configs/resnet18_cifar10.py:full}
common=(--config "$config" --set data.source=synthetic --set data.data_dir=
        --set data.synthetic_train=4096 --steps "${HOST_STEPS:-60}" --warmup 3)
CMDBUF="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL \
--xla_gpu_graph_min_graph_size=1"
run() {  # name, XLA_FLAGS, extra flags
  echo "== $1: XLA_FLAGS='$2'" >> "$OUT/host.log"
  XLA_FLAGS="$2" timeout "${HOST_CAP:-150}" python3 scripts/step_time.py "${common[@]}" \
    --out "$OUT/host_$1.json" "${@:3}" >> "$OUT/host.log" 2>&1 || echo "$1 failed: rc $?" >> "$OUT/host.log"
}
for v in ${HOST_VARIANTS:-dense bdwp bdwp_xla dense_cmdbuf bdwp_cmdbuf}; do
  case $v in
    dense) run dense "" --set method=dense;;
    bdwp) run bdwp "" --set method=bdwp;;
    bdwp_xla) run bdwp_xla "" --set method=bdwp --set implementation=xla;;
    bdwp_every100) run bdwp_every100 "" --set method=bdwp --set mask_every=100;;  # snapshot masks
    bdwp_every100_xla) run bdwp_every100_xla "" --set method=bdwp --set mask_every=100 \
                         --set implementation=xla;;
    bdwp_every100_fused) run bdwp_every100_fused "" --set method=bdwp --set mask_every=100 \
                           --card_rule fused_mask_source=true;;
    dense_cmdbuf) run dense_cmdbuf "$CMDBUF" --set method=dense;;
    bdwp_cmdbuf) run bdwp_cmdbuf "$CMDBUF" --set method=bdwp;;
    *) echo "unknown variant $v" >> "$OUT/host.log";;
  esac
done
grep -E "^==|^devices|^ +[0-9]+ +[0-9]+ |failed|Error" "$OUT/host.log" | grep -v "^I1" | head -n 30
