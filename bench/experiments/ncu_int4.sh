#!/usr/bin/env bash
# ncu on the int4 w4a16 MoE GEMM at decode size (issue 13: 0.27-0.45 of the HBM
# roofline; is the loop issue-bound, latency-bound or waiting on memory?).
# Both GEMMs of the call after the warm-up, with the sections that answer it:
#   OUT=/tmp/x TOKENS=1 bash bench/experiments/ncu_int4.sh   (or: bash bench/experiments/ncu_int4.sh 64)
# (on the GPU machine: ncu reads the counters there; clocks left alone, as
# /work/.library/device/METHOD.md asks).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
TOKENS=${1:-${TOKENS:-1}}
WARMUP=3
# Each call launches the int4 GEMM twice (GEMM1, GEMM2): on sm_90 by default fused_moe_wq_hopper_kernel
# (the wgmma kernel; AOTRITON_MOE_WQ_HOPPER=0 for the Triton fused_moe_wq_kernel). Skip the warm-up calls'.
ncu --clock-control none --kernel-name regex:"fused_moe_wq(_hopper)?_kernel" --launch-skip $((2 * WARMUP)) --launch-count 2 \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
  --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis --section SourceCounters \
  -o "$OUT/int4_m${TOKENS:-1}" -f \
  python3 bench/experiments/int4_one_call.py --tokens "${TOKENS:-1}" --warmup $WARMUP
ncu --import "$OUT/int4_m${TOKENS:-1}.ncu-rep" --print-units base --page details | tee "$OUT/int4_m${TOKENS:-1}.txt" | tail -150
# Why the warps wait (0.72 eligible of 3.16 active per scheduler, 2026-12-05): the
# WarpStateStats stall reasons, cycles per issued instruction each, both kernels.
ncu --import "$OUT/int4_m${TOKENS:-1}.ncu-rep" --page raw --print-units base \
  | grep -E "^\s*fused_moe_wq(_hopper)?_kernel|issue_stalled_[a-z_]+_per_issue_active\.ratio" \
  | tee "$OUT/int4_m${TOKENS:-1}_stalls.txt"
# Which instructions the warps wait at (the stall reasons sampled per SASS instruction; the
# twenty-third session's reasons were long_scoreboard 2.2, wait 1.4, barrier 1.1 and membar 0
# cycles per instruction at M = 1: the loop is latency-bound, not fence-bound). Best effort: the
# source page needs a recent ncu.
ncu --import "$OUT/int4_m${TOKENS:-1}.ncu-rep" --page source --csv --print-source sass \
  > "$OUT/int4_m${TOKENS:-1}_sass_stalls.csv" || echo "ncu: no per-instruction source page"
