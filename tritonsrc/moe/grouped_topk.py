"""MoE router with expert groups (DeepSeek-V2/V3) and sigmoid scoring, per token.

For each token row:
  score      = softmax(logits) (SCORING 0) or sigmoid(logits) (SCORING 1)
  selection  = score + bias (bias = e_score_correction_bias, or 0 without one)
  groups     = num_groups equal runs of group_size = E / num_groups experts;
               group score = max selection in the group, or with a bias the
               sum of the group's two largest selections (DeepSeek-V3)
  keep the topk_group best groups, then the topk best experts inside them
  by selection; weights are the *uncorrected* scores of those experts,
  optionally divided by their sum (renormalize), times routed_scaling_factor.
num_groups = topk_group = 1 is plain sigmoid / softmax top-k.
Output order: descending selection score (torch.topk's order). Ties: the
lower expert id (and, between groups, the group of the lower expert id) first.
Non-finite logits still give valid ids: NaN counts as -inf; softmax rows
follow topk_softmax.py (+inf logits share the mass, an all -inf row is
uniform). renormalize with a zero sum leaves the weights as they are (0).

Constexprs
  functional: BLOCK_E (8, 16, ..., 512: max(8, next_pow2(E))); the logits
              dtype (fp16/bf16/fp32) through the pointer type. Everything else
              is a runtime argument (one compiled kernel per dtype and BLOCK_E).
  tuning:     BLOCK_M (tokens per program), num_warps; num_stages 1.
Grid: (cdiv(num_tokens, BLOCK_M), 1, 1); at decode sizes that is one program.
"""
import triton
import triton.language as tl

from ..pdl import wait_for_predecessor

SOFTMAX = 0
SIGMOID = 1


@triton.jit
def _scores(x, col_ok, SCORING_IS_SOFTMAX):
    """x: fp32 logits with masked columns and NaN already -inf."""
    x_max = tl.max(x, axis=1)
    shifted = x - x_max[:, None]
    shifted = tl.where((x_max == float("inf"))[:, None],
                       tl.where(x == float("inf"), 0.0, float("-inf")), shifted)
    shifted = tl.where((x_max == float("-inf"))[:, None],
                       tl.where(col_ok[None, :], 0.0, float("-inf")), shifted)
    e = tl.exp(shifted)
    soft = e / tl.sum(e, axis=1)[:, None]
    sig = 1.0 / (1.0 + tl.exp(-x))
    return tl.where(SCORING_IS_SOFTMAX, soft, tl.where(col_ok[None, :], sig, 0.0))


@triton.jit
def grouped_topk_kernel(logits_ptr, bias_ptr, topk_weights_ptr, topk_ids_ptr,
                        num_tokens, num_experts, topk, num_groups, topk_group,
                        scoring, has_bias, renormalize, routed_scaling_factor,
                        stride_lm, stride_le, stride_b, stride_wm, stride_im,
                        BLOCK_E: tl.constexpr, BLOCK_M: tl.constexpr, USE_PDL: tl.constexpr = False):
    """Grouped top-k routing.

    logits_ptr       [num_tokens, num_experts] fp16/bf16/fp32 (strides stride_lm, stride_le)
    bias_ptr         [num_experts] fp32, stride stride_b (read only when has_bias != 0)
    topk_weights_ptr [num_tokens, topk] fp32 out (row stride stride_wm, columns contiguous)
    topk_ids_ptr     [num_tokens, topk] int32 out (row stride stride_im, columns contiguous)
    num_groups divides num_experts; 1 <= topk_group <= num_groups;
    1 <= topk <= topk_group * num_experts / num_groups (checked by the operator).
    scoring: 0 softmax, 1 sigmoid. has_bias, renormalize: 0/1.
    """
    wait_for_predecessor(USE_PDL)
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < num_tokens
    col_ok = cols < num_experts
    rows64 = rows.to(tl.int64)
    x = tl.load(logits_ptr + rows64[:, None] * stride_lm + cols[None, :] * stride_le,
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    x = tl.where(col_ok[None, :] & (x == x), x, float("-inf"))
    p = _scores(x, col_ok, scoring == 0)

    bias = tl.load(bias_ptr + cols * stride_b, mask=col_ok & (has_bias != 0), other=0.0)
    sel = p + bias[None, :]
    sel = tl.where(col_ok[None, :] & (sel == sel), sel, float("-inf"))

    # Group score of every column's group, broadcast over the group's columns.
    group_size = num_experts // num_groups
    grp = cols // group_size  # masked columns land at groups >= num_groups
    gscore = tl.full([BLOCK_M, BLOCK_E], float("-inf"), tl.float32)
    for g in range(num_groups):
        in_g = (grp == g)[None, :]
        v = tl.where(in_g, sel, float("-inf"))
        m1 = tl.max(v, axis=1)
        first = tl.min(tl.where(in_g & (v == m1[:, None]), cols[None, :], BLOCK_E), axis=1)
        m2 = tl.max(tl.where(cols[None, :] == first[:, None], float("-inf"), v), axis=1)
        top2 = m1 + m2
        top2 = tl.where(top2 == top2, top2, float("-inf"))  # inf + -inf
        gs = tl.where(has_bias != 0, top2, m1)
        gscore = tl.where(in_g, gs[:, None], gscore)

    # Keep the topk_group best groups (every column of a kept group is eligible).
    kept = tl.zeros([BLOCK_M, BLOCK_E], tl.int32)
    for k in range(topk_group):
        avail = col_ok[None, :] & (kept == 0)
        best = tl.max(tl.where(avail, gscore, float("-inf")), axis=1)
        idx = tl.min(tl.where(avail & (gscore == best[:, None]), cols[None, :], BLOCK_E), axis=1)
        kept = tl.where(grp[None, :] == (idx // group_size)[:, None], 1, kept)
    eligible = (kept != 0) & col_ok[None, :]

    # The topk best experts among them; rank records the output column.
    rank = tl.full([BLOCK_M, BLOCK_E], -1, tl.int32)
    for k in range(topk):
        avail = eligible & (rank < 0)
        best = tl.max(tl.where(avail, sel, float("-inf")), axis=1)
        idx = tl.min(tl.where(avail & (sel == best[:, None]), cols[None, :], BLOCK_E), axis=1)
        rank = tl.where(cols[None, :] == idx[:, None], k, rank)
    chosen = rank >= 0
    total = tl.sum(tl.where(chosen, p, 0.0), axis=1)
    scale = tl.where((renormalize != 0) & (total > 0), 1.0 / total, 1.0) * routed_scaling_factor
    w = p * scale[:, None]
    smask = chosen & row_ok[:, None]
    tl.store(topk_weights_ptr + rows64[:, None] * stride_wm + rank, w, mask=smask)
    ids = tl.zeros([BLOCK_M, BLOCK_E], tl.int32) + cols[None, :]
    tl.store(topk_ids_ptr + rows64[:, None] * stride_im + rank, ids, mask=smask)
