#!/usr/bin/env bash
# The MoE ncu round beside a build (SIDE= of tools/gpu_final.sh): prefill bf16
# GEMM1 (Triton, Gluon, grouped_mm), then the decode GEMMs that sit below 0.9 of
# the roofline (fp8 per tensor: Mixtral M=1 GEMM1, DeepSeek M=8 GEMM2).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}
CASE="--layer mixtral --gemm 1 --M 4096" bash bench/experiments/ncu_moe_gemm.sh
for c in "mixtral 1 1" "deepseek 2 8"; do
  set -- $c
  mkdir -p "$OUT/decode_$1_$2_$3"
  OUT=$OUT/decode_$1_$2_$3 KERNELS=triton CASE="--layer $1 --gemm $2 --M $3 --quant fp8_tensor" \
    bash bench/experiments/ncu_moe_gemm.sh
done
