#!/usr/bin/env bash
# ncu on the Mixtral-like bf16 GEMM1 at M=4096 (issue 18.1: 0.86-0.91x torch._grouped_mm):
# the Triton kernel, the Gluon kernel and grouped_mm's CUTLASS kernel side by side.
# Tensor-pipe activity, stall reasons, occupancy: is the loss in the K loop or outside it?
#   OUT=/tmp/x KERNELS="triton gluon grouped_mm" CASE="--layer mixtral --gemm 1 --M 4096" bash bench/experiments/ncu_moe_gemm.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
for k in ${KERNELS:-triton gluon grouped_mm}; do
  # shellcheck disable=SC2086  # CASE is a list of arguments
  ncu --clock-control none --profile-from-start off --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section Occupancy \
    --section LaunchStats -o "$OUT/moe_gemm_$k" -f \
    python3 bench/experiments/moe_gemm_one_call.py --kernel "$k" ${CASE:-} 2>&1 | grep -v "^==PROF==" | tail -3
  ncu --import "$OUT/moe_gemm_$k.ncu-rep" --print-units base --page details > "$OUT/moe_gemm_$k.txt"
  ncu --import "$OUT/moe_gemm_$k.ncu-rep" --print-units base --page raw > "$OUT/moe_gemm_$k.raw.txt"
  echo "== $k"
  grep -E "^  [a-zA-Z_0-9]|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|Grid Size|Block Size|Dynamic Shared|No Eligible|Eligible Warps|Warp Cycles Per Issued" \
    "$OUT/moe_gemm_$k.txt" | head -30
  grep -E "pipe_tensor.*(cycles_active|inst_executed).*(pct|sum)|smsp__pcsamp_warps_issue_stalled_(long_scoreboard|barrier|wait|math_pipe_throttle|mio_throttle|lg_throttle|short_scoreboard|membar|sleeping|dispatch_stall|no_instruction|selected)[^_]" \
    "$OUT/moe_gemm_$k.raw.txt" | head -30
done
