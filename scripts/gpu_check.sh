#!/usr/bin/env bash
# The prepared GPU check: one call on a lent H100/H200 (about 8 minutes).
#
#   OUT=/path/to/results bash scripts/gpu_check.sh
#
# Runs the model tests on the GPU, then times VGG-16 against torchvision in the
# same run: bfloat16 at batch 64 and 256, float32 at batch 64, all three modes.
# Everything it measures lands under $OUT (JSON, PNG, logs) for docs/benchmarks.md.
# The GPU image has no pip index: the project runs from the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
cache=${TMPDIR:-/tmp}/vgg_jax_cache

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python -c "import jax, jaxlib, flax, optax; print(jax.devices(), jax.__version__, jaxlib.__version__, flax.__version__, optax.__version__)" | tee -a "$out/gpu.txt"

timeout 150 python -m pytest -q -x -p no:cacheprovider tests/test_configs.py tests/test_model.py tests/test_errors.py 2>&1 | tee "$out/pytest.log"

common=(--config D --mode forward,forward-backward,train-step --steps 30 --warmup 5 --vs torch --cache-dir "$cache")
timeout 330 python scripts/bench.py "${common[@]}" --dtype bfloat16 --batch-size 64,256 \
    --json "$out/d_bf16.json" --plot "$out/d_bf16.png" 2>&1 | tee "$out/bench_bf16.log"
timeout 150 python scripts/bench.py "${common[@]}" --dtype float32 --batch-size 64 \
    --json "$out/d_f32.json" 2>&1 | tee "$out/bench_f32.log"
