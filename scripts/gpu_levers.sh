#!/usr/bin/env bash
# GPU performance levers, one process each, D bf16 train step (and forward-backward) at one batch.
#
#   OUT=gpu_levers bash scripts/gpu_levers.sh
#   VGG_JAX_GPU_CHECK_TINY=1 OUT=gpu_levers_tiny bash scripts/gpu_levers.sh   # the same steps, tiny, on a CPU
#
# Each lever runs in its own process (XLA flags are read once per process) and
# writes one line of levers.tsv: name, mode, img/s, median s, compile s, temp MiB.
# First the profile: the default train step traced with jax.profiler, its device
# time by kind in levers.log and profile.json, and its optimised HLO kept as
# train_step_hlo.txt. Then the levers, by expected value: the ReLU whose
# gradient is masked by its output, pooling as a reshape and a max, both, XLA's
# cuDNN conv fusion flag, the default and then the same with warm caches
# (persistent compilation cache and per-fusion autotune cache: the second compile), batch 512 with remat, Triton
# GEMMs off, the custom-VJP convolution, and cuDNN autotuning off last (it ran
# past 222 s on an H200). Within VGG_JAX_GPU_CHECK_SECONDS (default 470, for
# one 9-minute call); one lever gets at most 100 s, and a lever is skipped when
# under 40 s are left. Results under $OUT: levers.tsv, levers.log,
# profile.json and train_step_hlo.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_levers_out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}  # no torch peer in these processes
cache=$(mktemp -d)
autotune="--xla_gpu_per_fusion_autotune_cache_dir=$cache/autotune"
start=$SECONDS
budget=${VGG_JAX_GPU_CHECK_SECONDS:-470}
if [ "${VGG_JAX_GPU_CHECK_TINY:-0}" = 1 ]; then
    common=(--config D --dtype bfloat16 --batch-size 4 --image-size 32 --width-scale 0.0625 --fc-width 32 --steps 2 --warmup 1)
else
    common=(--config D --dtype bfloat16 --batch-size 256 --steps 20 --warmup 3)
fi
timeout 60 python -m pytest -q -x -p no:cacheprovider tests/test_configs.py 2>&1 | tail -3 | tee "$out/levers.log"
printf "lever\tmode\timages_per_s\tmedian_s\tcompile_s\ttemp_mib\n" > "$out/levers.tsv"

lever() {  # name, XLA_FLAGS, then bench.py arguments
    name=$1; flags=$2; shift 2
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 40 ]; then echo "skipping $name: ${left}s left" | tee -a "$out/levers.log"; return; fi
    echo "== $name (XLA_FLAGS='$flags', $left s left)" | tee -a "$out/levers.log"
    cap=$((left < 100 ? left : 100))  # one lever never takes the rest (autotune level 0 ran past 222 s on an H200)
    rm -f "$out/lever.json"  # bench.py never replaces an output
    XLA_FLAGS="$flags" timeout "$cap" python scripts/bench.py "${common[@]}" --cache-dir "$cache" --json "$out/lever.json" "$@" \
        >> "$out/levers.log" 2>&1 || { echo "$name failed (status $?)" | tee -a "$out/levers.log"; return; }
    python - "$name" "$out/lever.json" >> "$out/levers.tsv" <<'EOF'
import json, sys
name, path = sys.argv[1:]
for record in json.load(open(path)):
    for mode, r in record["results"].items():
        temp = r["memory"]["temp_bytes"]
        print(f"{name}\t{mode}\t{r['images_per_s']:.1f}\t{r['median_s']:.4f}\t{r['compile_s']:.2f}\t{'-' if temp is None else round(temp / 2**20)}")
        if "remat" in r:
            m = r["remat"]
            print(f"{name}+remat\t{mode}\t{m['images_per_s']:.1f}\t{m['median_s']:.4f}\t{m['compile_s']:.2f}\t{round((m['temp_bytes'] or 0) / 2**20)}")
EOF
    [ "$name" = profile ] && cp "$out/lever.json" "$out/profile.json"
}
# The profile first: the default step, traced, with its optimised HLO dumped once (only the train step's module kept).
lever profile "$autotune --xla_dump_to=$cache/hlo --xla_dump_hlo_as_text" --mode train-step,forward --profile "$cache/trace"
find "$cache/hlo" -name "*after_optimizations.txt" -size +20k 2>/dev/null | xargs -r ls -S | head -1 | xargs -r -I{} cp {} "$out/train_step_hlo.txt"
lever relu-output-mask "$autotune" --mode train-step --relu-impl output_mask
lever pool-reshape "$autotune" --mode train-step --pool-impl reshape
lever relu+pool "$autotune" --mode train-step,forward --relu-impl output_mask --pool-impl reshape
lever conv-fusion "$autotune --xla_gpu_experimental_enable_conv_fusion=true" --mode train-step
lever default "$autotune" --mode train-step,forward-backward  # cold caches for this exact program...
lever cache-warm "$autotune" --mode train-step,forward-backward  # ...and warm: the second compile
lever batch512-remat "$autotune" --mode train-step --batch-size 512 --remat
lever triton-gemm-off "$autotune --xla_gpu_enable_triton_gemm=false" --mode train-step
lever custom-vjp "$autotune" --mode train-step --conv-impl custom_vjp
lever autotune-0 "--xla_gpu_autotune_level=0" --mode train-step
rm -f "$out/lever.json"
echo "gpu_levers done in $((SECONDS - start)) s" | tee -a "$out/levers.log"
python -c "import sys; [print(''.join(f'{c:<18}' for c in line.rstrip().split('\t'))) for line in open(sys.argv[1])]" "$out/levers.tsv"
