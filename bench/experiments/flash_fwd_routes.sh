#!/usr/bin/env bash
# The forward through both sm_90 routes of one build, at bench_flash.py's shapes: the Hopper (Gluon)
# kernel where it serves the call (AOTRITON_FLASH_HOPPER=1, the default) and the Triton kernel
# (AOTRITON_FLASH_HOPPER=0; the variable is read once a process, hence two runs). cuDNN and SDPA flash
# are timed in both runs, so each JSON stands alone.
#   bash bench/experiments/flash_fwd_routes.sh OUTDIR --dtype bf16 --mode fwd --seqlens 2048,8192 --head-dims 64 --extra-head-dims=
# BENCH=bench/bench_flash_varlen.py times the varlen forward's routes the same way (its own arguments).
set -euo pipefail
out=$1; shift
cd "$(dirname "$0")/../.."
mkdir -p "$out"
echo "## Hopper route (AOTRITON_FLASH_HOPPER=1)"
bench=${BENCH:-bench/bench_flash.py}
name=$(basename "$bench" .py)
AOTRITON_FLASH_HOPPER=1 python3 "$bench" "$@" --json "$out/${name}_route_hopper_sm90.json"
echo "## Triton route (AOTRITON_FLASH_HOPPER=0)"
AOTRITON_FLASH_HOPPER=0 python3 "$bench" "$@" --json "$out/${name}_route_triton_sm90.json"
