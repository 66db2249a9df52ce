#!/usr/bin/env bash
# The kernel grid of issue 3 on every visible GPU at once: one bench_kernels.py process per GPU,
# each on its own share of the shapes (a process times dense and sparse on its own GPU only).
#   GIT_SHA=$(git rev-parse HEAD) bash scripts/gpu_kernels.sh [budget s per process]
# Env: MAX_ROTATE (bench_kernels --max_rotate), CELLS (per-GPU cell lists, see below).
# Writes under $OUT (default ./gpu_out): device.txt, gpuN/{kernels.json,kernels.md,bench.log}.
set -o pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/device.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" >> "$OUT/device.txt" 2>&1
ngpu=$(nvidia-smi -L | wc -l)
# A cell (shape x pattern) cost 35-100 s on the H200s whatever its shape, mostly compiling, so the
# shares balance shape counts; the last also runs the block sweep. One GPU runs everything. The 44
# cells take about 15 minutes on 4 GPUs: more than one call's 600 s, so a second call passes
# CELLS= the cells the first lists as not run (see kernels.md).
shares=("square_8192,square_4096,vit_s.qkv"
        "vit_s.mlp_fc1,vit_s.mlp_fc2,vit_b.attn_out"
        "vit_b.mlp_fc1,vit_b.mlp_fc2,resnet50.layer3.conv2_3x3"
        "resnet50.layer4.conv2_3x3,resnet50.layer4.conv3_1x1")
what=--shapes
if [ -n "$CELLS" ]; then  # CELLS="cells of gpu0;cells of gpu1;...": finish what a run left
  IFS=';' read -r -a shares <<< "$CELLS"; what=--cells
elif [ "$ngpu" -lt 4 ]; then shares=("$(IFS=,; echo "${shares[*]}")"); fi
for i in "${!shares[@]}"; do
  mkdir -p "$OUT/gpu$i"
  extra=(); [ "$i" -eq $((${#shares[@]} - 1)) ] && extra=(--sweep)
  CUDA_VISIBLE_DEVICES=$i python3 scripts/bench_kernels.py --grid "$what" "${shares[$i]}" \
    --budget_s "${1:-480}" --max_rotate "${MAX_ROTATE:-16}" --out "$OUT/gpu$i" "${extra[@]}" \
    > "$OUT/gpu$i/bench.log" 2>&1 &
done
wait
grep -h -E "FAILED|Traceback" "$OUT"/gpu*/bench.log | head -n 10
for i in "${!shares[@]}"; do
  echo "gpu$i: $(grep -c '^op=' "$OUT/gpu$i/bench.log") rows; $(grep -o 'Not run.*items' \
    "$OUT/gpu$i/kernels.md")"
done
