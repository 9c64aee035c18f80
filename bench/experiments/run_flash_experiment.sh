#!/usr/bin/env bash
# Device call: JIT-only flash experiments (no AOT build): TMA/pipelined forward
# variants vs the production kernel and SDPA, then the bf16 forward tuner.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 bench/experiments/flash_fwd_tma.py --dtype bf16 --quick --json "$OUT/flash_tma_bf16.json" 2>&1 | tee "$OUT/exp_tma.log" | grep -v "^   "
timeout 300 python3 python/tune.py --kernels attn_fwd --dtypes bf16 --head-dims 64,128 --causal 0,2 \
  --seqlens 512,1024,2048,4096,16384 2>&1 | grep -v "tuning:" | tee "$OUT/tune_bf16.log" | tail -22
cp tuning/sm_90/attn_fwd.json "$OUT/attn_fwd.json"
