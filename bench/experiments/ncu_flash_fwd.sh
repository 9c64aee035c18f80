#!/usr/bin/env bash
# ncu on the flash forward against SDPA's cuDNN and flash backends on one shape (issue 19: head dim 128
# at seqlen 2048 is 0.94-0.96x cuDNN on the H100): tensor-pipe activity, issue stalls, occupancy and
# waves of each, to say whether the loss is in the key loop or in the prologue/epilogue and the tail.
# IMPLS may name jit (the same Gluon kernel through the Triton JIT: no build needed).
#   OUT=/tmp/x IMPLS="aot cudnn flash" CASE="--D 128 --seqlen 2048" bash bench/experiments/ncu_flash_fwd.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
tag=$(echo "${CASE:---D 128 --seqlen 2048}" | tr -d ' -')
for impl in ${IMPLS:-aot cudnn flash}; do
  rep="$OUT/flash_fwd_${impl}_$tag"
  # shellcheck disable=SC2086  # CASE is a list of arguments
  ncu --clock-control none --profile-from-start off --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section Occupancy \
    --section LaunchStats -o "$rep" -f \
    python3 bench/experiments/flash_fwd_one_call.py --impl "$impl" ${CASE:---D 128 --seqlen 2048} 2>&1 | grep -v "^==PROF==" | tail -3
  ncu --import "$rep.ncu-rep" --print-units base --page details > "$rep.txt"
  ncu --import "$rep.ncu-rep" --print-units base --page raw > "$rep.raw.txt"
  echo "== $impl"
  grep -E "^  [a-zA-Z_0-9]|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|Grid Size|Block Size|Waves Per SM|Dynamic Shared|No Eligible|Eligible Warps|Warp Cycles Per Issued" \
    "$rep.txt" | head -30
  grep -E "pipe_tensor.*(cycles_active|inst_executed).*(pct|sum)|smsp__pcsamp_warps_issue_stalled_(long_scoreboard|barrier|wait|math_pipe_throttle|mio_throttle|lg_throttle|short_scoreboard|membar|sleeping|dispatch_stall|no_instruction|selected)[^_]" \
    "$rep.raw.txt" | head -30
done
