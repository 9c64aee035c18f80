#!/usr/bin/env bash
# Device call, one line, bounded (< 3 min): the MoE grouped-GEMM experiment
# (bench/experiments/moe_gemm_tma*.py, issue 18 item 1): TMA weights,
# persistent tile loop, block size 128, each checked against float32 and timed
# next to the production kernel (JIT and, when install/ has it, AOT) and
# torch._grouped_mm on the Mixtral and DeepSeek layers at M = 512 and 4096,
# balanced routing. JIT only: no build needed.
#   OUT=... bash bench/experiments/run_moe_experiment.sh
#   MOE_EXP_ARGS="--routing balanced,random"   extra arguments
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
JSON=bench/results/moe_gemm_experiment_sm90.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
# Every kernel compiled first by 12 processes (Triton's disk cache), then per
# case: the check, then the timing; no new case after 140 s, killed at 170 s;
# the JSON is rewritten after every case.
timeout -k 5 170 "$PY" bench/experiments/moe_gemm_tma.py --check --bench --warm-processes 12 --budget-s 140 \
  --json "$JSON" ${MOE_EXP_ARGS:-} > "$OUT/moe_experiment.log" 2>&1
rc=$?
grep -v "^ok " "$OUT/moe_experiment.log" | tail -160
echo "exit status $rc (124: cut by the timeout; rows so far are in the JSON)"
cp "$JSON" "$OUT/" 2>/dev/null
exit $rc
