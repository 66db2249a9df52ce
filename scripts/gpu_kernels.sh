#!/usr/bin/env bash
# One device call: compiled kernel tests vs the jnp references first, then the benchmark.
#   GIT_SHA=$(git rev-parse HEAD) bash scripts/gpu_kernels.sh [bench budget s] [pytest timeout s]
# Writes under $OUT (default ./gpu_out): pytest log, bench log, kernels.json, kernels.md.
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$OUT/device.txt"
timeout "${2:-200}" python -m pytest tests/kernels/test_kernels.py::test_nm_matmul \
  tests/kernels/test_kernels.py::test_prune_pack -k compiled -q --maxfail=5 -p no:cacheprovider \
  -W ignore::DeprecationWarning 2>&1 | tee "$OUT/pytest_kernels.log" | tail -n 15
python scripts/bench_kernels.py --out "$OUT" --budget_s "${1:-300}" 2>&1 | tee "$OUT/bench.log" \
  | grep -E "FAILED|device|Error" | head -n 20
grep -E "^sweep" "$OUT/bench.log" | sort -t: -k2 | head -n 40 > "$OUT/sweep.txt"
cat "$OUT/kernels.md"
