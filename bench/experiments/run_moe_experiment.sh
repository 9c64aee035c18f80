#!/usr/bin/env bash
# Device call, one line, bounded (< 3 min): the MoE grouped-GEMM experiment
# (bench/experiments/moe_gemm_tma*.py, moe_gemm_gluon_kernel.py; issue 18
# item 1): TMA weights, persistent tile loop, block size 128, warp-specialized
# Gluon, each checked against float32 and timed next to the production kernel
# (JIT and, when install/ has it, AOT) and torch._grouped_mm on the Mixtral
# and DeepSeek layers at M = 512 and 4096 (balanced routing; Mixtral M=512
# also random). JIT only: no build needed.
#   OUT=... bash bench/experiments/run_moe_experiment.sh
#   MOE_EXP_ARGS="--routing balanced,random"   extra arguments for both phases
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
EXP=bench/experiments/moe_gemm_tma.py
JSON=bench/results/moe_gemm_experiment_sm90.json
JSON_WS=bench/results/moe_gemm_gluon_experiment_sm90.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
# 1. Triton variants: every kernel compiled first by 12 processes (Triton's
#    disk cache), then per case the check and the timing; no new case after
#    95 s, killed at 120 s; the JSON is rewritten after every case.
timeout -k 5 120 "$PY" $EXP --check --bench --warm-processes 12 --budget-s 95 --json "$JSON" \
  --variants prod_bm128,tma,tma_sortedA,persist,persist_sortedA,persist_ptr ${MOE_EXP_ARGS:-} \
  > "$OUT/moe_experiment.log" 2>&1
rc1=$?
grep -v "^ok " "$OUT/moe_experiment.log" | tail -130
echo "phase 1 exit status $rc1 (124: cut by the timeout; rows so far are in the JSON)"
# 2. The warp-specialized Gluon variants in their own process (a hang there
#    cannot cost phase 1): 40 s budget, killed at 50 s.
timeout -k 5 50 "$PY" $EXP --check --bench --warm-processes 8 --budget-s 40 --json "$JSON_WS" \
  --variants gluon_ws_sortedA,gluon_ws_persist_sortedA,gluon_ws ${MOE_EXP_ARGS:-} > "$OUT/moe_experiment_ws.log" 2>&1
rc2=$?
grep -v "^ok " "$OUT/moe_experiment_ws.log" | tail -70
echo "phase 2 exit status $rc2"
cp "$JSON" "$JSON_WS" "$OUT/" 2>/dev/null
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]
