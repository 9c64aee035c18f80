"""Flash attention backward, fused path: dK, dV and dQ in one pass over P.

bwd_fused is bwd_dkdv that also adds each dS^T-block's dQ contribution into
an fp32 accumulator with atomics (FlashAttention-2's scheme): 5 matmuls per
tile instead of the split path's 4 + 3, at the price of fp32 atomics and
run-to-run rounding differences in dQ (dK/dV stay deterministic: they are
computed exactly as in bwd_dkdv). bwd_dq_convert (bwd_dq_convert.py) then writes
dQ = sm_scale * acc in the output type. Launch order:
  bwd_preprocess(ZERO_DQ_ACC=True) -> bwd_fused -> bwd_dq_convert.

Constexprs
  bwd_fused: same FUNCTIONAL and TUNING constexprs as bwd_dkdv.

Grids:
  bwd_fused       (cdiv(max_seqlen_k, BLOCK_N), batch * num_heads_k, 1)
  bwd_dq_convert  (cdiv(max_seqlen_q, BLOCK_M), batch * num_heads_q, 1)

Suggested bwd_fused defaults (BLOCK_M, BLOCK_N, num_warps, num_stages),
fp16/bf16, from compile checks only (bwd_configs.FUSED_CONFIGS; fp32 takes the
fp32 bwd_dkdv row):
  sm_90  D<=64: (64, 128, 8, 2)  D=128: (32, 128, 8, 2)  D=256: (16, 32, 4, 2)
         dropout: D<=64: (32, 128, 8, 2)  D=128: (16, 128, 8, 2)
  sm_80  D<=32: (64, 128, 8, 2)  D=64: (32, 128, 8, 2)  D=128: (32, 64, 8, 2)
         D=256: (16, 64, 8, 2) (spills 24-72 bytes)
         dropout: D<=64: (32, 128, 8, 2), others as without
AOT signature hints: as bwd_dkdv; DQA and its strides like Q's.
"""
import triton
import triton.language as tl

from .bwd_dkdv import _dkdv_program
from .prologue import key_block


@triton.jit
def bwd_fused(
    Q, K, V, DO, DK, DV, DQA, LSE, Delta,
    cu_seqlens_q, cu_seqlens_k, philox_seed_ptr, philox_offset_ptr,
    sm_scale, dropout_p,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
    stride_dqa_z, stride_dqa_h, stride_dqa_m,
    stride_lse_z, stride_lse_h,
    stride_delta_z, stride_delta_h,
    num_heads_q, num_heads_k,
    max_seqlen_q, max_seqlen_k, head_dim, total_q, total_k,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, CAUSAL_TYPE: tl.constexpr,
    IS_VARLEN: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dK, dV (as bwd_dkdv) and dQ / sm_scale accumulated into DQA.

    Arguments as bwd_dkdv, plus:
    DQA          *fp32 dQ accumulator, Q's layout: (b, m, h, d) at
                 DQA + b*stride_dqa_z + h*stride_dqa_h + m*stride_dqa_m + d
                 (varlen: stride_dqa_z = 0, global rows). Must be zero on
                 entry (bwd_preprocess with ZERO_DQ_ACC); receives
                 sum_j dS_ij k_j without sm_scale.
    """
    off_z, off_hk, group, q_start, seqlen_q, k_start, seqlen_k, start_n = key_block(
        cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
        IS_VARLEN, BLOCK_N)
    if start_n >= seqlen_k:
        return
    _dkdv_program(
        Q, K, V, DO, DK, DV, LSE, Delta, DQA, philox_seed_ptr, philox_offset_ptr,
        sm_scale, dropout_p,
        stride_qz, stride_qh, stride_qm,
        stride_kz, stride_kh, stride_kn,
        stride_vz, stride_vh, stride_vn,
        stride_doz, stride_doh, stride_dom,
        stride_dkz, stride_dkh, stride_dkn,
        stride_dvz, stride_dvh, stride_dvn,
        stride_lse_z, stride_lse_h,
        stride_delta_z, stride_delta_h,
        stride_dqa_z, stride_dqa_h, stride_dqa_m,
        num_heads_q, max_seqlen_q, max_seqlen_k, head_dim,
        off_z, off_hk, group, start_n, q_start, seqlen_q, k_start, seqlen_k,
        LSE, 0, 0.0, -1, -1, 0,  # no window / softcap / ALiBi on the fused path
        BLOCK_DMODEL, PADDED_HEAD, CAUSAL_TYPE, IS_VARLEN, ENABLE_DROPOUT, True,
        False, 0, BLOCK_M, BLOCK_N)
