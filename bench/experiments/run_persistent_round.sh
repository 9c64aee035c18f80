#!/usr/bin/env bash
# JIT-only device round on an idle GPU (no build): the persistent forward
# (attn_fwd_hopper SCHEDULE 4) checked and timed against the ping-pong and
# cuDNN, its JIT GPU tests, then the forward tuner for head dim 128
# non-causal (every candidate, persistent included) into $OUT/tuning.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT/tuning"
export PYTHONUNBUFFERED=1
start=$(date +%s); el() { echo "$(( $(date +%s) - start )) s"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 200 python3 bench/experiments/hopper_persistent.py --json "$OUT/flash_hopper_persistent_r3_sm90.json" 2>&1 \
  | tee "$OUT/persistent.log" | tail -16
echo "=== persistent JIT tests ($(el))"
timeout 150 python3 -m pytest -q -p no:cacheprovider test/gpu/test_flash_hopper_gpu.py -k persistent 2>&1 | tail -4
echo "=== tuner ($(el))"
rm -rf /tmp/aotriton-tune && mkdir -p /tmp/aotriton-tune && cp -r python tritonsrc tuning tools /tmp/aotriton-tune/
(cd /tmp/aotriton-tune && timeout "${HOPPER_S:-200}" python3 python/tune.py --kernels attn_fwd_hopper --dtypes bf16,fp16 \
   --head-dims 128 --causal 0 --seqlens 512,1024,2048,4096,8192 2>&1 | grep -v "tuning:" | tail -14)
cp /tmp/aotriton-tune/tuning/sm_90/attn_fwd_hopper.json "$OUT/tuning/" 2>/dev/null
echo "done after $(el)"
