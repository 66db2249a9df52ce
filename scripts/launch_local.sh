#!/usr/bin/env bash
# Data-parallel training as one process per local GPU (jax.distributed over localhost):
#   bash scripts/launch_local.sh NUM_PROCESSES python -m experiments.main --config C.py --workdir W
# Process i sees only GPU i (CUDA_VISIBLE_DEVICES=i); the command gets --config.distributed=True.
# With one process driving several GPUs the host's kernel launches limit the step (results/dp.md).
set -o pipefail
n=$1; shift
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < n; i++)); do
  CUDA_VISIBLE_DEVICES=$i JAX_COORDINATOR_ADDRESS=localhost:$port JAX_NUM_PROCESSES=$n \
    JAX_PROCESS_ID=$i "$@" --config.distributed=True &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
