#!/usr/bin/env bash
# One-call GPU check of the runner: smoke runs (dense + bdwp) of the five CIFAR-10 configs in bf16,
# then ResNet9 at full size on synthetic 50k-image data: step time with and without data loading.
#   bash scripts/gpu_smoke.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/gpu_smoke}
mkdir -p "$out"
source scripts/gpu_env.sh
nvidia-smi -L
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
configs=()
for m in resnet9 resnet18 resnet50 vgg19 vit; do configs+=(--config "configs/${m}_cifar10.py:smoke"); done
timeout 150 python3 -m experiments.sweep "${configs[@]}" --workdir_root /tmp/gpu_smoke_runs \
  --results_dir "$out/runs" --set dtype=bfloat16 > "$out/smoke.log" 2>&1
echo "smoke sweep exit $?"; grep -E "Finished|Error|error:" "$out/smoke.log" | tail -20
sed -n '/^config /,$p' "$out/smoke.log"
for method in bdwp dense; do
  timeout 100 python3 scripts/step_time.py --config configs/resnet9_cifar10.py --steps 30 \
    --set data.source=synthetic --set data.synthetic_train=50000 --set data.synthetic_test=1000 \
    --set method=$method --out "$out/step_time_resnet9_$method.json" > "$out/step_time_$method.log" 2>&1
  echo "step_time $method exit $?"; grep -E "devices|^ +1 |Error" "$out/step_time_$method.log"
done
