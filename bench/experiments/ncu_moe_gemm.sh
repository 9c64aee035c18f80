#!/usr/bin/env bash
# ncu on the Mixtral-like bf16 GEMM1 at M=4096 (issue 18.1: 0.86-0.91x torch._grouped_mm):
# the Triton kernel, the Gluon kernel and grouped_mm's CUTLASS kernel side by side.
# Tensor-pipe activity, stall reasons, occupancy: is the loss in the K loop or outside it?
#   OUT=/tmp/x KERNELS="triton gluon grouped_mm" CASE="--layer mixtral --gemm 1 --M 4096" bash bench/experiments/ncu_moe_gemm.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=bench/experiments/ncu_summary.sh
. bench/experiments/ncu_summary.sh
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
for k in ${KERNELS:-triton gluon grouped_mm}; do
  echo "== $k"
  # shellcheck disable=SC2086  # CASE is a list of arguments
  ncu_profile "$OUT/moe_gemm_$k" python3 bench/experiments/moe_gemm_one_call.py --kernel "$k" ${CASE:-}
done
