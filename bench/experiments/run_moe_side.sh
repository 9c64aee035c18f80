#!/usr/bin/env bash
# The MoE JIT experiments of a device round, run on the idle GPU beside the build
# (tools/gpu_final.sh SIDE="bash bench/experiments/run_moe_side.sh"): the sm_90 int4 GEMM with
# the weights as wgmma's register operand against the Triton kernel (first: the one not yet
# measured), the decode dynamic quantization's A/B and bitwise check, GEMM2 at SPLIT_K 1/2/4/8,
# the int4 GEMM1 with more warps per SM, GEMM1 with the activation in its epilogue.
# Results land in $OUT and bench/results/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout 240 python3 bench/experiments/int4_wgmma.py --json "$OUT/int4_wgmma_sm90.json" 2>&1 | grep -v Warning \
  | tee "$OUT/int4_wgmma.log"
echo "int4_wgmma exit ${PIPESTATUS[0]}"
timeout 120 python3 bench/experiments/dynamic_quant_chunks.py 2>&1 | grep -v Warning | tee "$OUT/dynamic_quant_chunks.log"
echo "dynamic_quant_chunks exit ${PIPESTATUS[0]}"
timeout 240 python3 bench/experiments/gemm2_splitk.py --json "$OUT/gemm2_splitk_sm90.json" 2>&1 | grep -v Warning \
  | tee "$OUT/gemm2_splitk.log"
echo "gemm2_splitk exit ${PIPESTATUS[0]}"
timeout 150 python3 bench/experiments/int4_occupancy.py --json "$OUT/int4_occupancy_sm90.json" 2>&1 | grep -v Warning \
  | tee "$OUT/int4_occupancy.log"
echo "int4_occupancy exit ${PIPESTATUS[0]}"
timeout 180 python3 bench/experiments/gated_gemm1.py --json "$OUT/gated_gemm1_sm90.json" 2>&1 | grep -v Warning \
  | tee "$OUT/gated_gemm1.log"
echo "gated_gemm1 exit ${PIPESTATUS[0]}"
