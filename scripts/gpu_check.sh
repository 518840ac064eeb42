#!/usr/bin/env bash
# The prepared GPU check: all the GPU measurement in one call, within 9 minutes.
#
#   OUT=gpu_results bash scripts/gpu_check.sh
#   VGG_JAX_GPU_CHECK_TINY=1 OUT=gpu_check_tiny bash scripts/gpu_check.sh   # the same steps, tiny, on a CPU
#
# Prints the devices and versions, runs the tests that need no download, then
# times VGG-16 in bf16 (batch 32, 64, 128, 256) and fp32 (64, 256), forward and
# train-step, against torchvision (AMP, channels_last) in the same run; then the
# bf16 train step at 256 with --remat and against torch.compile, profiled (device
# time by kind for ours, torchvision and torch.compile in bench.log); then A and E
# while time allows (--vs torch; the GPU image has torch and torchvision).
# Then train.py on a packed JPEG folder (D bf16, --freeze pool5, --workers auto) against the same
# run on synthetic data: the loop's input at the step's rate (packing needs array_record).
# Logs and JSON land under $OUT in at most 6 files (a remote runner may return only a few):
# check.log, bench.log and one JSON per run. The GPU image has no pip index: the
# project runs from the tree. Each run gets what is left of the budget
# (VGG_JAX_GPU_CHECK_SECONDS, default 450) and is skipped under a minute.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}  # leave the rest to the torch peers in the same process
cache=${TMPDIR:-/tmp}/vgg_jax_cache
start=$SECONDS
budget=${VGG_JAX_GPU_CHECK_SECONDS:-450}

if [ "${VGG_JAX_GPU_CHECK_TINY:-0}" = 1 ]; then
    common=(--image-size 32 --width-scale 0.0625 --fc-width 32 --steps 2 --warmup 1)
    sweep=(--batch-size 2,4); few=(--batch-size 2); one=(--batch-size 4)
    tests=(tests/test_configs.py)
    loop=(--config A --width-scale 0.0625 --fc-width 32 --image-size 32 --scale 40 --batch-size 8 --max-steps 6); images=64
else
    common=(--steps 20 --warmup 3)
    sweep=(--batch-size 32,64,128,256); few=(--batch-size 64,256); one=(--batch-size 256)
    tests=(tests/test_configs.py tests/test_conv.py tests/test_model.py)
    loop=(--config D --dtype bfloat16 --freeze pool5 --image-size 224 --scale 256 --batch-size 256 --max-steps 40); images=4096
fi

{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; python -c "import jax, jaxlib, flax, optax; print(jax.devices()); print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"; python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>/dev/null; } | tee "$out/check.log"

timeout 90 python -m pytest -q -x -p no:cacheprovider "${tests[@]}" 2>&1 | tail -5 | tee -a "$out/check.log"

run() {  # name, then bench.py arguments; skipped when under a minute of the budget is left
    name=$1; shift
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 60 ]; then echo "skipping $name: ${left}s left" | tee -a "$out/check.log"; return; fi
    echo "== $name ($left s left)" | tee -a "$out/bench.log"
    timeout "$left" python scripts/bench.py --cache-dir "$cache" "${common[@]}" --json "$out/$name.json" "$@" 2>&1 \
        | tee -a "$out/bench.log" | grep -E "ours / peer|remat=True|median|error|Device"
}
# In order of importance: the D bf16 sweep, fp32, remat and torch.compile at the largest batch, then A and E.
run D_bf16 --config D --dtype bfloat16 --mode forward,train-step --vs torch "${sweep[@]}"
run D_fp32 --config D --dtype float32 --mode forward,train-step --vs torch "${few[@]}"
run D_bf16_remat_compile --config D --dtype bfloat16 --mode train-step --vs torch,torch-compile --remat --profile "$cache/profile" "${one[@]}"
run AE_bf16 --config A,E --dtype bfloat16 --mode forward,train-step --vs torch "${one[@]}"

train_rate() {  # name, then train.py arguments: the median img/s of the logged windows after the first
    name=$1; shift
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 90 ]; then echo "skipping $name: ${left}s left" | tee -a "$out/check.log"; return; fi
    rm -rf "$cache/run_$name"
    timeout "$left" python scripts/train.py "${loop[@]}" --log-every 5 --eval-every 100000 --checkpoint-every 100000 \
        --workdir "$cache/run_$name" "$@" > "$cache/run_$name.log" 2>&1
    python -c "import json, statistics, sys; r = [json.loads(l)['images_per_s'] for l in open(sys.argv[1]) if 'images_per_s' in l]; print(sys.argv[2], 'train.py img/s, median of windows after the first:', round(statistics.median(r[1:] or r), 1), [round(x) for x in r])" \
        "$cache/run_$name/metrics.jsonl" "$name" 2>&1 | tee -a "$out/check.log"
}
# The training loop on packed images (fine-tuning's cost: D bf16, --freeze pool5) against the same on synthetic data.
if [ $((budget - (SECONDS - start))) -ge 150 ]; then
    python -c "import sys; from vgg_jax.benchmark.data_bench import write_jpeg_folder; write_jpeg_folder(sys.argv[1], int(sys.argv[2]), classes=8)" "$cache/jpegs" "$images" \
        && python scripts/pack_images.py "$cache/jpegs" "$cache/packed" --short-side 256 --overwrite 2>&1 | tee -a "$out/check.log"
    train_rate loop_packed --data "packed:$cache/packed" --workers auto
    train_rate loop_synthetic --data synthetic
fi
echo "gpu_check done in $((SECONDS - start)) s; results in $out" | tee -a "$out/check.log"
