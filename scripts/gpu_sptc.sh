#!/usr/bin/env bash
# One device call for the native backend: build the extension, then run the named sections of
# scripts/bench_sptc.py, of scripts/bench_decode.py (DECODE=kernel,sweep,models), the streaming
# measurement (STREAM=1), the CIFAR auto-vs-pallas timing (AUTO_VS_PALLAS="--set ..." flags) and
# the step-time variants. Results under $OUT (one archive, results.tgz).
#   TESTS="tests/kernels/test_sparse_tc.py tests/ops/test_ops_sparse_tc.py" SECTIONS=check,gemm \
#     RUNS="vit_b16_imagenet224:speed/dense/auto vit_b16_imagenet224:speed/bdwp/auto/sparse_tc/2:4" \
#     bash scripts/gpu_sptc.sh
set -u
source scripts/gpu_env.sh
export NMSPARSE_GIT_SHA=${GIT_SHA:-}  # the copy's .git on the GPU machine is stale: name the commit
FINAL_OUT=$OUT
OUT=$FINAL_OUT/r  # everything lands here and goes back as one archive (the copy-back takes 8 files)
mkdir -p "$OUT"
trap 'tar -C "$OUT" -czf "$FINAL_OUT/results.tgz" . && rm -rf "$OUT"' EXIT
nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/device.txt"
python3 -m pip show nvidia-cusparselt-cu13 2>/dev/null | head -2 | tee -a "$OUT/device.txt"
t0=$(date +%s)
if [ -z "${SKIP_BUILD:-}" ]; then
  python3 -m nmsparse.native.build > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
echo "build: $(( $(date +%s) - t0 )) s"
if [ -n "${TESTS:-}" ]; then  # the compiled GPU tests of the extension
  timeout "${TESTS_TIMEOUT:-240}" python3 -m pytest -q -x -p no:cacheprovider $TESTS 2>&1 | tee "$OUT/pytest.log" | tail -5
fi
if [ -n "${SECTIONS:-}" ]; then
  python3 scripts/bench_sptc.py --out "$OUT" --sections "$SECTIONS" 2>&1 | tee "$OUT/bench.log" | grep -v "^W\|^I1"
fi
if [ -n "${DECODE:-}" ]; then
  python3 scripts/bench_decode.py --out "$OUT" --sections "$DECODE" 2>&1 | tee "$OUT/decode.log" \
    | grep -v "^W\|^I1" | tail -40
fi
if [ -n "${DIAG:-}" ]; then  # scripts/decode_diag.py sections, then its time section per XLA_VARIANTS
  python3 scripts/decode_diag.py --out "$OUT/diag" --sections "$DIAG" ${DIAG_ARGS:-} 2>&1 \
    | tee "$OUT/diag.log" | grep -v "^W\|^I1" | grep -v "^check" | tail -${DIAG_TAIL:-60}
  i=0
  for flags in ${XLA_VARIANTS:-}; do  # e.g. --xla_gpu_enable_command_buffer= (comma-free flags)
    i=$((i + 1))
    XLA_FLAGS="$flags" python3 scripts/decode_diag.py --out "$OUT/diag_xla$i" --sections time \
      ${DIAG_XLA_ARGS:-} 2>&1 | tee "$OUT/diag_xla$i.log" | grep "^time" | tail -30
  done
fi
if [ -n "${NCU:-}" ]; then  # hardware counters of the native kernels (Firecracker machines)
  # no preallocation: ncu saves and restores the device memory the process holds on every pass
  XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "${NCU_TIMEOUT:-200}" ncu --clock-control none \
    -k "regex:vs_(pipe|tiled|fwd)" --launch-count "${NCU:-6}" --import-source no \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    --section MemoryWorkloadAnalysis --section SourceCounters \
    python3 scripts/decode_diag.py --out "$OUT/ncu" --sections ncu > "$OUT/ncu.txt" 2>&1
  grep -E "vs_[a-z]+_kernel|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occ|Block Limit|One or More|Issue Slots|Stall|Waves Per" \
    "$OUT/ncu.txt" | head -${NCU_TAIL:-120}
fi
if [ -n "${STREAM:-}" ]; then
  bash scripts/gpu_stream.sh "$OUT/stream_throughput.json" > "$OUT/stream.log" 2>&1
  tail -25 "$OUT/stream.log"
fi
if [ -n "${AUTO_VS_PALLAS:-}" ]; then
  python3 scripts/auto_vs_pallas.py $AUTO_VS_PALLAS --out "$OUT/auto_vs_pallas.json" 2>&1 \
    | tee "$OUT/auto_vs_pallas.log" | grep -v "^W\|^I1" | tail -12
fi
for v in ${RUNS:-}; do  # config[:variant]/method/attention/implementation/pattern/extra-set
  IFS=/ read -r cfg method att impl pattern extra <<< "$v"
  tag=$(echo "$v" | tr '/:=.' '____')
  python3 scripts/step_time.py --config "configs/${cfg%%:*}.py${cfg#${cfg%%:*}}" --set method="$method" \
    ${att:+--set model_kwargs.attention=$att} ${impl:+--set implementation=$impl} \
    ${pattern:+--set pattern=$pattern} ${extra:+--set ${extra//,/ --set }} --steps "${STEPS:-20}" --warmup 3 \
    --nowithout_data --out "$OUT/step_$tag.json" 2>&1 | grep -v "^W\|^I1" | tail -1
done
for v in ${PROFILE:-}; do  # config-file:method:attention[:implementation[:pattern]]
  IFS=: read -r cfg method att impl pattern <<< "$v"
  python3 scripts/profile_step.py --config "configs/$cfg.py:speed" --set method="$method" \
    ${att:+--set model_kwargs.attention=$att} ${impl:+--set implementation=$impl} \
    ${pattern:+--set pattern=$pattern} --out "$OUT/profile_${cfg}_${method}_${att:-na}_${impl:-none}.json" \
    2>&1 | grep -v "^W\|^I1" | tail -25
done
