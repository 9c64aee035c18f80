"""Flash attention backward, step 3: dQ (FlashAttention-2 style).

One program owns BLOCK_M query rows of one (sequence, query head) and loops
over the key blocks those rows see: no atomics, deterministic by
construction. Needs Delta = rowsum(dO * O) from bwd_preprocess and the
forward's LSE.

Constexprs
  FUNCTIONAL (must match the call):
    BLOCK_DMODEL   16, 32, 64, 128, 256: power-of-two bucket >= head_dim
    PADDED_HEAD    head_dim != BLOCK_DMODEL (masks the d axis)
    CAUSAL_TYPE    0 none, 1 top-left (key j <= query i),
                   2 bottom-right (j <= i + seqlen_k - seqlen_q, per sequence)
    IS_VARLEN      sequences given by cu_seqlens_q / cu_seqlens_k
    ENABLE_DROPOUT Philox dropout (same keep_mask call as the forward)
    LOCAL_WINDOW   runtime band mask, SCORE_MOD 0/1/2 none/softcap/ALiBi: as
                   the forward (attn_mods.py)
    BLOCK_DV       0: V/dO have head_dim; 64 or 128: exactly BLOCK_DV columns
                   (no padding), Q/K/dQ keep head_dim (as the forward)
    (plus the element type of Q/K/V/dO/dQ: fp16, bf16 or fp32; fp32 runs
     tl.dot with its default tf32 precision on GPUs, like the forward)
  TUNING:
    BLOCK_M        query rows per program (power of two >= 16)
    BLOCK_N        keys per inner step (power of two >= 16)
    num_warps, num_stages (launch options)

Grid: (cdiv(max_seqlen_q, BLOCK_M), batch * num_heads_q, 1).

Suggested defaults (BLOCK_M, BLOCK_N, num_warps, num_stages), fp16/bf16;
fp32 rows, the dropout rule and the sweep list are in bwd_configs.py
(DEFAULT_CONFIGS, DROPOUT_SHRINK, CANDIDATE_CONFIGS):
  sm_90  D<=128: (128, 64, 8, 2)  D=256: (64, 32, 8, 2)
  sm_80  D=16: (128, 64, 8, 3)  D=32, 64: (128, 64, 8, 2)  D=128: (128, 32, 8, 2)
         D=256: (64, 32, 8, 2)
  with dropout: BLOCK_N halved (min 16).

AOT signature hints: as bwd_dkdv (strides and, with PADDED_HEAD, head_dim
need a divisibility hint or the loads go scalar).
"""
import triton
import triton.language as tl

from .attn_mods import in_band, log2_scores, score_grad, score_mod_params
from .dropout import keep_mask
from .prologue import key_range, philox_state, query_block

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn,
              lo, hi, offs_m, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
              seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
              lo_off, hi_off, mod0, mod1,
              BLOCK_N: tl.constexpr, PADDED_HEAD: tl.constexpr, MASKED: tl.constexpr,
              CAUSAL: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
              LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr, V_PADDED: tl.constexpr):
    """Key blocks [lo, hi) of one query block. MASKED=False is the hot loop:
    every key is in range and visible to every row, so no masks are built.
    V columns are offs_dv, masked by head_dim only if V_PADDED."""
    offs_nb = tl.arange(0, BLOCK_N)
    d_ok = offs_d < head_dim
    k_ptrs = k_base + (lo + offs_nb)[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + (lo + offs_nb)[:, None] * stride_vn + offs_dv[None, :]
    for start_n in tl.range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_nb
        if MASKED:
            n_ok = offs_n < seqlen_k
            if PADDED_HEAD:
                ld = n_ok[:, None] & d_ok[None, :]
            else:
                ld = n_ok[:, None]
            k = tl.load(k_ptrs, mask=ld, other=0.0)
            if V_PADDED == PADDED_HEAD:  # V shares K's mask unless only K is padded
                v = tl.load(v_ptrs, mask=ld, other=0.0)
            else:
                v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            if PADDED_HEAD:
                k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
                if V_PADDED:
                    v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
                else:
                    v = tl.load(v_ptrs)
            else:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
        qk = tl.dot(q, tl.trans(k))
        if SCORE_MOD != 0:
            qk = log2_scores(qk, offs_m[:, None], offs_n[None, :], qk_scale, mod0, mod1, SCORE_MOD)
            p = tl.math.exp2(qk - lse2[:, None])
        else:
            p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASKED:
            # where() after exp2: a row with lse = -inf gives inf here and
            # must be dropped by the select, never multiplied.
            ok = n_ok[None, :]
            if LOCAL_WINDOW:
                ok = ok & in_band(offs_m[:, None], offs_n[None, :], lo_off, hi_off)
            elif CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None] + diag)
            p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        if ENABLE_DROPOUT:
            keep = keep_mask(seed, philox_offset, bh, offs_m, offs_n,
                             max_seqlen_q, max_seqlen_k, dropout_p)
            dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
        # dS = P * (dP - Delta); sm_scale is applied once at the end.
        ds = p * (dp - delta[:, None])
        if SCORE_MOD != 0:
            ds = score_grad(ds, qk, mod1, SCORE_MOD)
        dq = tl.dot(ds.to(k.dtype), k, dq)
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return dq


# The feature scalars stay runtime values under the JIT, as in the AOT build.
@triton.jit(do_not_specialize=["stride_alibi_z", "window_left", "window_right", "window_align"])
def bwd_dq(
    Q, K, V, DO, DQ, LSE, Delta,
    cu_seqlens_q, cu_seqlens_k, philox_seed_ptr, philox_offset_ptr,
    sm_scale, dropout_p,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dqz, stride_dqh, stride_dqm,
    stride_lse_z, stride_lse_h,
    stride_delta_z, stride_delta_h,
    num_heads_q, num_heads_k,
    max_seqlen_q, max_seqlen_k, head_dim, total_q, total_k,
    alibi_slopes, stride_alibi_z, softcap, window_left, window_right, window_align,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, CAUSAL_TYPE: tl.constexpr,
    IS_VARLEN: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
    LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr = 0,
):
    """dQ of softmax(sm_scale * Q K^T [causal]) [dropout] V.

    Q, K, V, DO  element pointers (fp16/bf16/fp32), last dim contiguous:
                 (b, m, h, d) at ptr + b*stride_z + h*stride_h + m*stride_m + d
                 (K/V: kv head and key n). Varlen: stride_*z = 0, row m of
                 sequence b is global row cu_seqlens[b] + m.
    DQ           output, Q's element type and heads, own strides.
    LSE          *fp32, forward log-sum-exp (natural log, scaled scores):
                 LSE + b*stride_lse_z + h*stride_lse_h + row, row = m
                 (batched) or cu_seqlens_q[b] + m (varlen, stride_lse_z = 0);
                 -inf for rows that see no key (their dQ is 0).
    Delta        *fp32, rowsum(dO * O) from bwd_preprocess, LSE layout with
                 strides stride_delta_z / stride_delta_h.
    cu_seqlens_q, cu_seqlens_k  *i32 [batch + 1] (varlen only).
    philox_seed_ptr, philox_offset_ptr  *i64 device scalars (dropout only).
    sm_scale     fp32 softmax scale.
    dropout_p    fp32 drop probability (kept probabilities scale by 1/(1-p)).
    num_heads_q, num_heads_k  GQA: query head h uses kv head
                 h // (num_heads_q // num_heads_k).
    max_seqlen_q, max_seqlen_k  batched: the lengths; varlen: the bounds
                 (grid and dropout stream layout; longer sequences are cut
                 to them, seq_bounds.py).
    head_dim     runtime head size <= BLOCK_DMODEL (of V/dO too unless
                 BLOCK_DV != 0: then they have BLOCK_DV columns).
    total_q, total_k  varlen: rows of the packed Q and K tensors (cu_seqlens
                 are clamped into them, seq_bounds.py); batched: ignored.
    alibi_slopes, stride_alibi_z, softcap, window_left, window_right,
    window_align  as the forward (LOCAL_WINDOW / SCORE_MOD only).
    """
    bh, off_z, off_h, off_hk, q_start, seqlen_q, k_start, seqlen_k, start_m = query_block(
        cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
        IS_VARLEN, CAUSAL_TYPE, LOCAL_WINDOW, BLOCK_M)
    if start_m >= seqlen_q:
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    m_ok = offs_m < seqlen_q
    if PADDED_HEAD:
        q_mask = m_ok[:, None] & (offs_d < head_dim)[None, :]
    else:
        q_mask = m_ok[:, None]
    if BLOCK_DV == 0:
        offs_dv = offs_d
        do_mask = q_mask
    else:
        offs_dv = tl.arange(0, BLOCK_DV)
        do_mask = m_ok[:, None]

    # 64-bit base offsets; in-sequence offsets stay 32-bit.
    q_base = Q + off_z.to(tl.int64) * stride_qz + off_h.to(tl.int64) * stride_qh
    do_base = DO + off_z.to(tl.int64) * stride_doz + off_h.to(tl.int64) * stride_doh
    dq_base = DQ + off_z.to(tl.int64) * stride_dqz + off_h.to(tl.int64) * stride_dqh
    k_base = K + off_z.to(tl.int64) * stride_kz + off_hk.to(tl.int64) * stride_kh
    v_base = V + off_z.to(tl.int64) * stride_vz + off_hk.to(tl.int64) * stride_vh
    if IS_VARLEN:
        q_base += q_start.to(tl.int64) * stride_qm
        do_base += q_start.to(tl.int64) * stride_dom
        dq_base += q_start.to(tl.int64) * stride_dqm
        k_base += k_start.to(tl.int64) * stride_kn
        v_base += k_start.to(tl.int64) * stride_vn
    q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_dom + offs_dv[None, :], mask=do_mask, other=0.0)
    lse_base = LSE + off_z.to(tl.int64) * stride_lse_z + off_h.to(tl.int64) * stride_lse_h
    delta_base = Delta + off_z.to(tl.int64) * stride_delta_z + off_h.to(tl.int64) * stride_delta_h
    # Rows past seqlen_q get lse = +inf: P = 0 there even in unmasked tiles.
    lse = tl.load(lse_base + q_start + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(delta_base + q_start + offs_m, mask=m_ok, other=0.0)
    lse2 = lse * LOG2E

    seed, philox_offset = philox_state(philox_seed_ptr, philox_offset_ptr, ENABLE_DROPOUT)

    if SCORE_MOD != 0:
        mod0, mod1 = score_mod_params(sm_scale, softcap, alibi_slopes + off_z * stride_alibi_z + off_h,
                                      seqlen_q, seqlen_k, SCORE_MOD)
    else:
        mod0 = 0.0
        mod1 = 0.0
    diag, lo, full_lo, full_end, hi, lo_off, hi_off = key_range(
        start_m, seqlen_q, seqlen_k, window_left, window_right, window_align,
        CAUSAL_TYPE, LOCAL_WINDOW, BLOCK_M, BLOCK_N)

    qk_scale = sm_scale * LOG2E
    dq = tl.zeros([BLOCK_M, BLOCK_DMODEL], dtype=tl.float32)
    if LOCAL_WINDOW:
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn,
                       lo, full_lo, offs_m, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
                       seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                       lo_off, hi_off, mod0, mod1,
                       BLOCK_N, PADDED_HEAD, True, False, ENABLE_DROPOUT, LOCAL_WINDOW, SCORE_MOD,
                       PADDED_HEAD and BLOCK_DV == 0)
    dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn,
                   full_lo, full_end, offs_m, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
                   seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                   lo_off, hi_off, mod0, mod1,
                   BLOCK_N, PADDED_HEAD, False, CAUSAL_TYPE != 0, ENABLE_DROPOUT, LOCAL_WINDOW, SCORE_MOD,
                   PADDED_HEAD and BLOCK_DV == 0)
    dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn,
                   full_end, hi, offs_m, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
                   seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                   lo_off, hi_off, mod0, mod1,
                   BLOCK_N, PADDED_HEAD, True, CAUSAL_TYPE != 0, ENABLE_DROPOUT, LOCAL_WINDOW, SCORE_MOD,
                   PADDED_HEAD and BLOCK_DV == 0)

    dq = dq * sm_scale
    tl.store(dq_base + offs_m[:, None] * stride_dqm + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=q_mask)
