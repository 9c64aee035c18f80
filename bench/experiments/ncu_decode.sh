#!/usr/bin/env bash
# ncu on the paged decode kernel (issue 12: B=1/8 at 8k-32k reach 0.23-0.79 of
# the HBM roofline, cuDNN 0.38-1.0; B=64 0.85-0.89): is a split's key loop
# waiting on memory (long scoreboard), on its own barriers, or issue-bound?
#   OUT=/tmp/x SHAPES="1:131072 8:32768 64:8192" bash bench/experiments/ncu_decode.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
WARMUP=3
for shape in ${SHAPES:-1:131072 8:32768 64:8192}; do
  B=${shape%%:*}; CTX=${shape##*:}
  # One attn_decode launch per call: skip the warm-up calls' launches.
  ncu --clock-control none --kernel-name attn_decode --launch-skip $WARMUP --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
    --section Occupancy --section LaunchStats \
    -o "$OUT/decode_b${B}_${CTX}" -f \
    python3 bench/experiments/decode_one_call.py --batch "$B" --context "$CTX" --warmup $WARMUP
  ncu --import "$OUT/decode_b${B}_${CTX}.ncu-rep" --print-units base --page details \
    | tee "$OUT/decode_b${B}_${CTX}.txt" | grep -E "Duration|Throughput|Achieved Occupancy|Theoretical Occupancy|Registers|Stall|Warp Cycles|Issued|Block Limit|Grid Size|Block Size|Shared Memory" | head -60
done
