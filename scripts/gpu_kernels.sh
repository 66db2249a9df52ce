#!/usr/bin/env bash
# One device call: compiled kernel tests vs the jnp references first, then the benchmark.
#   bash scripts/gpu_kernels.sh [bench budget seconds] [pytest timeout seconds]
# Writes under $OUT (default ./gpu_out): pytest log, bench log, kernels.json, kernels.md.
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/device.txt"
timeout "${2:-200}" python -m pytest tests/kernels tests/pack -q --maxfail=5 -p no:cacheprovider \
  -W ignore::DeprecationWarning 2>&1 | tee "$OUT/pytest_kernels.log" | tail -n 30
python scripts/bench_kernels.py --out "$OUT" --budget_s "${1:-300}" 2>&1 | tee "$OUT/bench.log" \
  | grep -E "FAILED|device|Error" | head -n 40
cat "$OUT/kernels.md"
