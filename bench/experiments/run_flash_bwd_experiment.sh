#!/usr/bin/env bash
# Device call (JIT only, no AOT build): the Gluon Hopper flash backward
# experiment. Checks every variant against a float64 reference, then times it
# against our Triton backward and SDPA's flash / cuDNN backends (bf16, quick
# grid; FULL=1 for both dtypes and seqlens 512..8192). Exit status 1 when a
# correctness check failed (the timings still ran).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
ARGS=(--quick)
[ "${FULL:-0}" = 1 ] && ARGS=()
timeout 560 python3 bench/experiments/flash_bwd_hopper.py "${ARGS[@]}" --json "$OUT/flash_bwd_hopper_experiment_sm90.json" 2>&1 \
  | tee "$OUT/flash_bwd_hopper.log"
rc=${PIPESTATUS[0]}
cp "$OUT/flash_bwd_hopper_experiment_sm90.json" bench/results/ 2>/dev/null
exit "$rc"
