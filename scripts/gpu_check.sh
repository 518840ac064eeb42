#!/usr/bin/env bash
# The prepared GPU check: all the GPU measurement in one call, within 9 minutes.
#
#   OUT=gpu_results bash scripts/gpu_check.sh
#   VGG_JAX_GPU_CHECK_TINY=1 OUT=gpu_check_tiny bash scripts/gpu_check.sh   # the same steps, tiny, on a CPU
#
# Prints the devices and versions, runs the tests that need no download, then
# times VGG-16 (and A and E while time allows) in bf16 and fp32, forward and
# train-step, at batch 32, 64, 128 and 256, against torchvision in the same run
# (--vs torch; the GPU image has torch and torchvision). JSON, plots and logs
# land under $OUT in at most 6 files (the device tool returns 8): check.log,
# bench.log and one JSON per config and dtype. The GPU image has no pip index:
# the project runs from the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
cache=${TMPDIR:-/tmp}/vgg_jax_cache
start=$SECONDS
budget=${VGG_JAX_GPU_CHECK_SECONDS:-540}

if [ "${VGG_JAX_GPU_CHECK_TINY:-0}" = 1 ]; then
    sizes=(--batch-size 2,4 --image-size 32 --width-scale 0.0625 --fc-width 32 --steps 2 --warmup 1)
    tests=(tests/test_configs.py)
else
    sizes=(--batch-size 32,64,128,256 --steps 30 --warmup 5)
    tests=(tests/test_configs.py tests/test_model.py tests/test_errors.py tests/test_conv.py)
fi

{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; python -c "import jax, jaxlib, flax, optax; print(jax.devices()); print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"; python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>/dev/null; } | tee "$out/check.log"

timeout 150 python -m pytest -q -x -p no:cacheprovider "${tests[@]}" 2>&1 | tail -5 | tee -a "$out/check.log"

run() {  # config dtype
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 60 ]; then echo "skipping $1 $2: ${left}s left" | tee -a "$out/check.log"; return; fi
    timeout "$left" python scripts/bench.py --config "$1" --dtype "$2" --mode forward,train-step --vs torch \
        --cache-dir "$cache" "${sizes[@]}" --json "$out/$1_$2.json" 2>&1 | tee -a "$out/bench.log" | grep -E "ours / peer|median|error|Device"
}
run D bfloat16
run D float32
run A bfloat16
run E bfloat16
echo "gpu_check done in $((SECONDS - start)) s; results in $out" | tee -a "$out/check.log"
