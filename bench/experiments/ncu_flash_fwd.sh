#!/usr/bin/env bash
# ncu on the flash forward against SDPA's cuDNN and flash backends on one shape (issue 19: head dim 128
# at seqlen 2048 is 0.94-0.96x cuDNN on the H100): tensor-pipe activity, issue stalls, occupancy and
# waves of each, to say whether the loss is in the key loop or in the prologue/epilogue and the tail.
# IMPLS may name jit (the same Gluon kernel through the Triton JIT: no build needed).
#   OUT=/tmp/x IMPLS="aot cudnn flash" CASE="--D 128 --seqlen 2048" bash bench/experiments/ncu_flash_fwd.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/experiments/ncu_summary.sh
. bench/experiments/ncu_summary.sh
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
tag=$(echo "${CASE:---D 128 --seqlen 2048}" | tr -d ' -')
for impl in ${IMPLS:-aot cudnn flash}; do
  echo "== $impl"
  # shellcheck disable=SC2086  # CASE is a list of arguments
  ncu_profile "$OUT/flash_fwd_${impl}_$tag" \
    python3 bench/experiments/flash_fwd_one_call.py --impl "$impl" ${CASE:---D 128 --seqlen 2048}
done
