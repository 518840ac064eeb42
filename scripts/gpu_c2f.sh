#!/usr/bin/env bash
# The coarse-to-fine experiment at the paper's widths on one GPU, in one call of at most 9 minutes.
#
#   OUT=gpu_results bash scripts/gpu_c2f.sh
#   VGG_JAX_GPU_CHECK_TINY=1 OUT=c2f_tiny bash scripts/gpu_c2f.sh   # the same steps, tiny, on a CPU
#
# Runs `scripts/coarse_to_fine.py --preset paper` (A and B, then D and E under
# six arms, three seeds each; docs/coarse_to_fine.md) and leaves results.json,
# coarse_to_fine.png, coarse_to_fine.md and c2f.log under $OUT/c2f_paper. The
# GPU image has no pip index: the project runs from the tree. Without
# scikit-learn there, the digits come from runs/digits.npz: write it first on a
# machine that has it, and carry it with the call (run's carry: ["runs/digits.npz"]):
#   python -c "from vgg_jax.training.sources import export_digits; export_digits('runs/digits.npz')"
# Without matplotlib there, results.json and the table are written and the plot
# is drawn afterwards here: python scripts/coarse_to_fine.py --render --workdir DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}/c2f_paper
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! python -c "import sklearn" 2>/dev/null && [ -f runs/digits.npz ]; then export VGG_JAX_DIGITS=${VGG_JAX_DIGITS:-$PWD/runs/digits.npz}; fi
extra=()
[ "${VGG_JAX_GPU_CHECK_TINY:-0}" = 1 ] && extra=(--tiny)
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; python -c "import jax; print(jax.devices(), 'jax', jax.__version__)"; echo "VGG_JAX_DIGITS=${VGG_JAX_DIGITS:-}"; } 2>&1 | tee "$out/c2f.log"
start=$SECONDS
timeout "${VGG_JAX_C2F_SECONDS:-520}" python scripts/coarse_to_fine.py --preset paper --workdir "$out" --overwrite "${extra[@]}" 2>&1 | tee -a "$out/c2f.log"
echo "gpu_c2f done in $((SECONDS - start)) s (exit ${PIPESTATUS[0]}); results in $out" | tee -a "$out/c2f.log"
