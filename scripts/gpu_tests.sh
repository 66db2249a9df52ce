#!/usr/bin/env bash
# The whole test suite on a GPU machine: compiled Pallas (Triton) kernels and ops instead of the
# interpreter, spread over pytest-xdist workers (the GPU image has pytest-xdist; compiling is CPU
# work). Needs the carried wheels (scripts/gpu_env.sh).
#   bash scripts/gpu_tests.sh [time cap s] [workers]     -> $OUT/pytest_gpu.log
# TESTS: the test paths (default: all of tests/).
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source scripts/gpu_env.sh || exit 1
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${1:-200}" python3 -m pytest ${TESTS:-tests} -q -n "${2:-12}" \
  -p no:cacheprovider -W ignore::DeprecationWarning -rs > "$OUT/pytest_gpu.log" 2>&1
echo "pytest rc $?"; grep -E "passed|failed" "$OUT/pytest_gpu.log" | tail -n 3
grep -E "^FAILED|^ERROR" "$OUT/pytest_gpu.log" | head -n 10
