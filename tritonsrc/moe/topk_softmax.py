"""MoE router: softmax over experts, then top-k, per token.

Constexprs
  functional: RENORMALIZE (False/True: divide the k weights by their sum),
              BLOCK_E (8, 16, ..., 512: max(8, next_pow2(num_experts)); the
              runtime num_experts masks the rest).
              The logits dtype (fp16/bf16/fp32) is functional through the
              pointer type. topk is a RUNTIME argument (1 <= topk <= num_experts).
  tuning:     BLOCK_M (tokens per program), num_warps, num_stages (irrelevant, 1).
Grid: (cdiv(num_tokens, BLOCK_M), 1, 1)
Default tuning (sm_90 and sm_80 alike, memory bound):
  BLOCK_E <= 64: BLOCK_M=16, num_warps=4;  BLOCK_E=128: BLOCK_M=8, num_warps=4;
  BLOCK_E=256:   BLOCK_M=4,  num_warps=4;  BLOCK_E=512: BLOCK_M=2, num_warps=4.
  (keeps BLOCK_M * BLOCK_E around 1K elements: 8 fp32 values per thread)
Ties: the lower expert id is picked first.
Non-finite logits (every output entry is still written, ids always in
[0, num_experts), weights finite): NaN counts as -inf; if a row has +inf
logits they share the probability equally (the limit of huge equal logits)
and every other expert gets 0; a row with no logit above -inf is uniform
(1 / num_experts each, ids 0, 1, ... by the tie rule).
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor


@triton.jit
def topk_softmax_kernel(logits_ptr, topk_weights_ptr, topk_ids_ptr,
                        num_tokens, num_experts, topk,
                        stride_lm, stride_le, stride_wm, stride_im,
                        RENORMALIZE: tl.constexpr, BLOCK_E: tl.constexpr,
                        BLOCK_M: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Router top-k.

    logits_ptr      [num_tokens, num_experts] fp16/bf16/fp32, strides (stride_lm, stride_le)
    topk_weights_ptr[num_tokens, topk] fp32 out, row stride stride_wm, column stride 1
    topk_ids_ptr    [num_tokens, topk] int32 out, row stride stride_im, column stride 1
    num_tokens, num_experts, topk: i32
    """
    wait_for_predecessor(USE_PDL)
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < num_tokens
    col_ok = cols < num_experts
    rows64 = rows.to(tl.int64)
    ptrs = logits_ptr + rows64[:, None] * stride_lm + cols[None, :] * stride_le
    # Rows past num_tokens read zeros; masked columns and NaN logits are -inf.
    x = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    x = tl.where(col_ok[None, :] & (x == x), x, float("-inf"))
    x_max = tl.max(x, axis=1)
    # x - max is NaN for +inf logits and for all -inf rows: +inf logits get
    # exp(0) and the rest 0; a row without a logit above -inf gets exp(0) on
    # every real column.
    shifted = x - x_max[:, None]
    shifted = tl.where((x_max == float("inf"))[:, None],
                       tl.where(x == float("inf"), 0.0, float("-inf")), shifted)
    shifted = tl.where((x_max == float("-inf"))[:, None],
                       tl.where(col_ok[None, :], 0.0, float("-inf")), shifted)
    p = tl.exp(shifted)
    p = p / tl.sum(p, axis=1)[:, None]

    # Selection loop only records the rank of each chosen expert; one scatter
    # store at the end writes everything (so renormalisation needs no re-read).
    # Masked columns sit at -1 (below every probability), chosen ones at -2.
    cand = tl.where(col_ok[None, :], p, -1.0)
    rank = tl.full([BLOCK_M, BLOCK_E], -1, tl.int32)
    for k in range(topk):
        best = tl.max(cand, axis=1)
        idx = tl.min(tl.where(cand == best[:, None], cols[None, :], BLOCK_E), axis=1)
        chosen = cols[None, :] == idx[:, None]
        rank = tl.where(chosen, k, rank)
        cand = tl.where(chosen, -2.0, cand)
    sel = rank >= 0
    w = p
    if RENORMALIZE:
        total = tl.sum(tl.where(sel, p, 0.0), axis=1)
        w = p / total[:, None]
    smask = sel & row_ok[:, None]
    tl.store(topk_weights_ptr + rows64[:, None] * stride_wm + rank, w, mask=smask)
    ids = tl.zeros([BLOCK_M, BLOCK_E], tl.int32) + cols[None, :]
    tl.store(topk_ids_ptr + rows64[:, None] * stride_im + rank, ids, mask=smask)
