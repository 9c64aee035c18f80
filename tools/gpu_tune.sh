#!/usr/bin/env bash
# One device call that refreshes the sm_90 tuning databases the speed issues
# need (JIT only: no AOT build), each step resumable and budgeted so the call
# ends inside a lease command; the databases come back under $OUT/tuning.
#   STEPS="moe flash_bwd"   which tuners to run (default both; also: hopper, gluon_bwd, decode, int4, retune, gluon_gemm)
#   BUDGET_S=200            per-step budget of the MoE tuner
#   QUANTS=bf16             MoE quant modes (bf16,fp16,fp8_tensor,fp8_block; fp8_channel: gluon_gemm only)
#   INT4_FRESH=1            int4: re-tune every bin (the step resumes otherwise); INT4_TOKENS, INT4_BLOCK_SIZES=all
# Then commit tuning/sm_90/*.json and rebuild release: generate.py compiles
# the winners into the LUTs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT/tuning"
export PYTHONUNBUFFERED=1
STEPS=${STEPS:-moe flash_bwd}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if [[ $STEPS == *moe* ]]; then
  python3 python/tune.py moe --layers mixtral,deepseek --tokens 1,64,512,4096 --quants "${QUANTS:-bf16}" \
    --budget-s "${BUDGET_S:-200}" 2>&1 | tail -25
fi
if [[ $STEPS == *retune* ]]; then
  # Entries tuned again with a new candidate in the space (replaced, not resumed):
  # e.g. decode M blocks grouped by 16 (RETUNE_LAYERS=mixtral RETUNE_TOKENS=64).
  python3 python/tune.py moe --layers "${RETUNE_LAYERS:-mixtral}" --tokens "${RETUNE_TOKENS:-64}" \
    --quants "${QUANTS:-bf16}" --retune --budget-s "${BUDGET_S:-200}" 2>&1 | tail -12
fi
if [[ $STEPS == *gluon_gemm* ]]; then
  # The sm_90 Gluon MoE GEMMs (python/tune_moe_gluon.py: fp8 and bf16 at block size 128; int4 decode
  # at block size 16 with GLUON_QUANTS=int4 (tokens 1,8,16,32,64 unless GLUON_TOKENS), int4_sym for its form without zero
  # points; GLUON_LAYERS=mixtral for one layer; GLUON_ONLY="--only PREFETCH=0 --only GROUP_SIZE_M=16" narrows
  # the space for a short run).
  # shellcheck disable=SC2086  # GLUON_ONLY is a list of options
  python3 python/tune.py moe_gluon --layers "${GLUON_LAYERS:-mixtral,deepseek}" --tokens "${GLUON_TOKENS:-}" \
    --quants "${GLUON_QUANTS:-fp8_tensor,fp8_block,bf16}" --budget-s "${BUDGET_S:-200}" ${GLUON_ONLY:-} 2>&1 | tail -16
fi
if [[ $STEPS == *flash_bwd* ]]; then
  # dK/dV and dQ are timed inside the whole backward (tune.py run_bwd), bf16 only:
  # the fp16 entries exist and were rejected once (docs/tuning-rejected/).
  timeout 240 python3 python/tune.py --kernels bwd_dkdv,bwd_dq --dtypes bf16 --head-dims 64,128 \
    --causal 0,2 --seqlens 1024,4096,16384 2>&1 | grep -v "tuning:" | tail -14
fi
if [[ $STEPS == *hopper* ]]; then
  # The sm_90 Gluon forward (head dim 128; HOPPER_DIMS=192 for the three-block tiles): serial vs
  # ping-pong per seqlen bin, both dtypes (HOPPER_DTYPES). HOPPER_RETUNE=1 re-measures bins the
  # database has (entries are otherwise kept: a resumed run). HOPPER_KERNELS=attn_fwd_hopper_varlen
  # tunes the packed-varlen forward (equal lengths: its bins are max_seqlen_q/k).
  timeout "${HOPPER_S:-240}" python3 python/tune.py --kernels "${HOPPER_KERNELS:-attn_fwd_hopper}" --dtypes "${HOPPER_DTYPES:-bf16,fp16}" \
    --head-dims "${HOPPER_DIMS:-128}" ${HOPPER_RETUNE:+--retune} \
    --causal "${HOPPER_CAUSAL:-0,1,2}" --seqlens "${HOPPER_SEQLENS:-512,1024,2048,4096,8192,16384}" 2>&1 \
    | grep -v "tuning:" | tail -40
fi
if [[ $STEPS == *gluon_bwd* ]]; then
  # The sm_90 Gluon backward per seqlen bin: two warpgroups warp-specialized or in one partition,
  # and at head dim 64 one warpgroup (two CTAs/SM); dQ by atomics (the default path), both dtypes.
  timeout "${GLUON_BWD_S:-300}" python3 python/tune.py --kernels bwd_dkdv_hopper --dtypes bf16,fp16 --head-dims "${GLUON_BWD_DIMS:-64,128}" \
    --causal 0,1,2 --fuse-dq "${GLUON_BWD_FUSE:-1}" --seqlens "${GLUON_BWD_SEQLENS:-512,1024,2048,4096}" 2>&1 \
    | grep -v "tuning:" | tail -30
fi
if [[ $STEPS == *decode* ]]; then
  # KV-cache decode (python/tune_decode.py): bf16 D 128, paged and contiguous,
  # one entry per keys-per-split bin (batch 1, 8, 64 at 32k tokens).
  python3 python/tune.py decode --dtypes "${DECODE_DTYPES:-bf16}" --head-dims 128 --paged 1,0 \
    --budget-s "${DECODE_BUDGET_S:-120}" 2>&1 | tail -12
fi
if [[ $STEPS == *int4* ]]; then
  # int4 w4a16 decode GEMMs (fused_moe_gemm_wq, group 128 with zero points), Mixtral's layer.
  # INT4_FRESH=1: tune every bin again (a new dequantization in the space).
  [ -n "${INT4_FRESH:-}" ] && rm -f tuning/sm_90/fused_moe_gemm_wq.json
  # INT4_BLOCK_SIZES=all: every 16-64 row block size (the operator takes 16 up to M=64; is 64 faster there?).
  python3 python/tune.py moe --layers mixtral --tokens "${INT4_TOKENS:-1,8,16,64}" --quants int4 \
    --block-sizes "${INT4_BLOCK_SIZES:-auto}" --budget-s "${INT4_BUDGET_S:-120}" 2>&1 | tail -12
fi
cp tuning/sm_90/*.json "$OUT/tuning/"
