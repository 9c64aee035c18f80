#!/usr/bin/env bash
# The JIT experiments of a device round, run on the idle GPU beside the build
# (tools/gpu_final.sh SIDE=...): the Gluon Hopper backward, then the persistent
# ping-pong forward. Results land in $OUT and bench/results/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
bash bench/experiments/run_flash_bwd_experiment.sh; echo "flash_bwd_hopper exit $?"
timeout 300 python3 bench/experiments/hopper_persistent.py --json "$OUT/flash_hopper_persistent_sm90.json" 2>&1 \
  | grep -v Warning | tee "$OUT/hopper_persistent.log"
echo "hopper_persistent exit ${PIPESTATUS[0]}"
