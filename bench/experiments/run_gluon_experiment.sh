#!/usr/bin/env bash
# Device call, one line, bounded (< 3 min): the Gluon Hopper flash forward
# (bench/experiments/flash_fwd_gluon*.py) checked against float32 and timed
# against the production Triton kernel and SDPA flash/cuDNN. JIT only, no build.
#   OUT=... bench/experiments/run_gluon_experiment.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
JSON=bench/results/flash_gluon_experiment_sm90.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
# One process: the check's compiles are reused by the benchmark. The budget
# stops new rows at 140 s; the JSON is rewritten after every row.
timeout -k 5 170 "$PY" bench/experiments/flash_fwd_gluon.py --check --bench --budget-s 140 --json "$JSON" \
  > "$OUT/gluon_experiment.log" 2>&1
rc=$?
grep -v "^ok " "$OUT/gluon_experiment.log" | tail -60
echo "exit status $rc (124: cut by the timeout; rows so far are in the JSON)"
cp "$JSON" "$OUT/" 2>/dev/null
exit $rc
