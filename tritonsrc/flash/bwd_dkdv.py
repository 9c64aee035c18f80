"""Flash attention backward, step 2: dK and dV (FlashAttention-2 style).

One program owns BLOCK_N keys of one (sequence, kv head) and loops over the
query heads of its GQA group and over the query blocks that see those keys,
so dK/dV are summed in registers in a fixed order: no atomics, bit-identical
run to run (the kernel is deterministic by construction).

Needs Delta = rowsum(dO * O) from bwd_preprocess and the forward's LSE.

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
    BLOCK_DV       0: V/dO/dV have head_dim; 64 or 128: exactly BLOCK_DV
                   columns (no padding), Q/K/dK keep head_dim (as the forward)
    (plus the element type of Q/K/V/dO/dK/dV: fp16, bf16 or fp32; fp32 runs
     tl.dot with its default tf32 precision on GPUs, like the forward)
  TUNING:
    BLOCK_M        query rows per inner step (power of two >= 16)
    BLOCK_N        keys per program (power of two >= 16)
    num_warps, num_stages (launch options)

Grid: (cdiv(max_seqlen_k, BLOCK_N), batch * num_heads_k, 1).

Suggested defaults (BLOCK_M, BLOCK_N, num_warps, num_stages), fp16/bf16;
fp32 rows, the dropout rule and the sweep list are in bwd_configs.py
(DEFAULT_CONFIGS, DROPOUT_SHRINK, CANDIDATE_CONFIGS):
  sm_90  D<=64: (64, 128, 8, 2)  D=128: (32, 128, 8, 2)  D=256: (16, 64, 8, 2)
  sm_80  D<=32: (64, 128, 8, 2)  D=64: (32, 128, 8, 2)  D=128: (32, 64, 8, 2)
         D=256: (16, 64, 8, 2)
  with dropout: BLOCK_M halved (min 16).

AOT signature hints: the element pointers and LSE/Delta/cu_seqlens take
tt.divisibility 16. The Q/K/V/dO/dK/dV strides need a divisibility hint
(16, or 8 for fp16/bf16 rows of 16 bytes) for vectorised 16-byte loads: with
no hint every load is scalar. With PADDED_HEAD, head_dim needs one as well
(8 for 16-bit types, head_dim % 8 == 0) or the d-masked loads go scalar.
"""
import triton
import triton.language as tl

from .attn_mods import band_offsets, band_row_blocks, in_band, log2_scores, score_grad, score_mod_params
from .dropout import keep_mask
from .prologue import causal_diag, key_block, philox_state

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_zbase, do_zbase, lse_zbase, delta_zbase,
                stride_qh, stride_qm, stride_doh, stride_dom, stride_lse_h, stride_delta_h,
                row0, nblk, group, hq_base, bh_base, offs_n, offs_d, offs_dv, head_dim,
                seqlen_q, diag, qk_scale, seed, philox_offset,
                max_seqlen_q, max_seqlen_k, dropout_p,
                lo_off, hi_off, sm_scale, softcap, alibi_zbase, seqlen_k,
                BLOCK_M: tl.constexpr, PADDED_HEAD: tl.constexpr,
                CAUSAL: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
                LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr, V_PADDED: tl.constexpr):
    """Rows [row0, row0 + nblk * BLOCK_M) of each query head of the group.

    One flat loop over (head, row block): a nested head loop made the
    compiler keep values live across it (register spills on sm_90), and the
    flat loop also prefetches across heads. Works on the transposed problem
    (keys x rows) so that dK and dV come out of the dots directly. Rows past
    seqlen_q load as 0 with lse = +inf, so P = 0 there without score masks;
    keys past seqlen_k only pollute dK/dV rows that are never stored.
    CAUSAL adds the diagonal mask (where() after exp2: rows with lse = -inf
    see no key and give inf there, which the select drops).
    LOCAL_WINDOW masks with the band [lo_off, hi_off] instead (CAUSAL is
    then False); SCORE_MOD modifies the scores (per-head ALiBi slope).
    dO columns are offs_dv, masked by head_dim only if V_PADDED."""
    offs_mb = tl.arange(0, BLOCK_M)
    d_ok = offs_d < head_dim
    q_offs = offs_mb[:, None] * stride_qm + offs_d[None, :]
    do_offs = offs_mb[:, None] * stride_dom + offs_dv[None, :]
    for t in tl.range(0, group * nblk):
        g = t // nblk
        start_m = row0 + (t - g * nblk) * BLOCK_M
        off_h = hq_base + g
        offs_m = start_m + offs_mb
        m_ok = offs_m < seqlen_q
        if PADDED_HEAD:
            ld = m_ok[:, None] & d_ok[None, :]
        else:
            ld = m_ok[:, None]
        q_ptr = q_zbase + off_h.to(tl.int64) * stride_qh + start_m * stride_qm
        do_ptr = do_zbase + off_h.to(tl.int64) * stride_doh + start_m * stride_dom
        q = tl.load(q_ptr + q_offs, mask=ld, other=0.0)
        if V_PADDED == PADDED_HEAD:  # dO shares Q's mask unless only Q is padded
            do = tl.load(do_ptr + do_offs, mask=ld, other=0.0)
        else:
            do = tl.load(do_ptr + do_offs, mask=m_ok[:, None], other=0.0)
        lse = tl.load(lse_zbase + off_h.to(tl.int64) * stride_lse_h + offs_m,
                      mask=m_ok, other=float("inf"))
        delta = tl.load(delta_zbase + off_h.to(tl.int64) * stride_delta_h + offs_m,
                        mask=m_ok, other=0.0)
        # P^T = exp(sm_scale * K Q^T - lse), log2e folded into one FMA.
        qkT = tl.dot(k, tl.trans(q))
        if SCORE_MOD != 0:
            mod0, mod1 = score_mod_params(sm_scale, softcap, alibi_zbase + off_h, seqlen_q, seqlen_k, SCORE_MOD)
            qkT = log2_scores(qkT, offs_m[None, :], offs_n[:, None], qk_scale, mod0, mod1, SCORE_MOD)
            pT = tl.math.exp2(qkT - (lse * LOG2E)[None, :])
        else:
            pT = tl.math.exp2(qkT * qk_scale - (lse * LOG2E)[None, :])
        if LOCAL_WINDOW:
            pT = tl.where(in_band(offs_m[None, :], offs_n[:, None], lo_off, hi_off), pT, 0.0)
        elif CAUSAL:
            pT = tl.where(offs_n[:, None] <= offs_m[None, :] + diag, pT, 0.0)
        dpT = tl.dot(v, tl.trans(do))
        if ENABLE_DROPOUT:
            keep = tl.trans(keep_mask(seed, philox_offset, bh_base + g, offs_m, offs_n,
                                      max_seqlen_q, max_seqlen_k, dropout_p))
            rscale = 1.0 / (1.0 - dropout_p)
            pdT = tl.where(keep, pT * rscale, 0.0)
            dpT = tl.where(keep, dpT * rscale, 0.0)
        else:
            pdT = pT
        dv = tl.dot(pdT.to(do.dtype), do, dv)
        # dS = P * (dP - Delta); sm_scale is applied once at the end.
        dsT = pT * (dpT - delta[None, :])
        if SCORE_MOD != 0:
            dsT = score_grad(dsT, qkT, mod1, SCORE_MOD)
        dsT = dsT.to(q.dtype)
        dk = tl.dot(dsT, q, dk)
    return dk, dv


@triton.jit
def _dkdv_program(
    Q, K, V, DO, DK, DV, LSE, Delta, philox_seed_ptr, philox_offset_ptr,
    sm_scale, dropout_p,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
    stride_lse_z, stride_lse_h,
    stride_delta_z, stride_delta_h,
    num_heads_q, max_seqlen_q, max_seqlen_k, head_dim,
    off_z, off_hk, group, start_n, q_start, seqlen_q, k_start, seqlen_k,
    alibi_slopes, stride_alibi_z, softcap, window_left, window_right, window_align,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, CAUSAL_TYPE: tl.constexpr,
    IS_VARLEN: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
    LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr = 0,
):
    """Body of bwd_dkdv for keys [start_n, start_n + BLOCK_N) of one (sequence, kv head)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    n_ok = offs_n < seqlen_k
    if PADDED_HEAD:
        kv_mask = n_ok[:, None] & (offs_d < head_dim)[None, :]
    else:
        kv_mask = n_ok[:, None]
    if BLOCK_DV == 0:
        offs_dv = offs_d
        v_mask = kv_mask
    else:
        offs_dv = tl.arange(0, BLOCK_DV)
        v_mask = n_ok[:, None]

    # 64-bit base offsets; in-sequence offsets stay 32-bit.
    k_base = K + off_z.to(tl.int64) * stride_kz + off_hk.to(tl.int64) * stride_kh
    v_base = V + off_z.to(tl.int64) * stride_vz + off_hk.to(tl.int64) * stride_vh
    dk_base = DK + off_z.to(tl.int64) * stride_dkz + off_hk.to(tl.int64) * stride_dkh
    dv_base = DV + off_z.to(tl.int64) * stride_dvz + off_hk.to(tl.int64) * stride_dvh
    if IS_VARLEN:
        k_base += k_start.to(tl.int64) * stride_kn
        v_base += k_start.to(tl.int64) * stride_vn
        dk_base += k_start.to(tl.int64) * stride_dkn
        dv_base += k_start.to(tl.int64) * stride_dvn
    k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :], mask=v_mask, other=0.0)

    seed, philox_offset = philox_state(philox_seed_ptr, philox_offset_ptr, ENABLE_DROPOUT)

    # Row range split (same for every head of the group):
    #   [lo, full_lo)        causal diagonal: some (row, key) pairs hidden
    #   [full_lo, seqlen_q)  every pair visible (rows past seqlen_q load as 0)
    # LOCAL_WINDOW: masked / unmasked / masked runs from band_row_blocks.
    lo_off = 0
    hi_off = 0
    if LOCAL_WINDOW:
        diag = 0
        lo_off, hi_off = band_offsets(seqlen_q, seqlen_k, window_left, window_right, window_align)
        lo, n_diag, full_lo, n_full, tail_lo, n_tail = band_row_blocks(
            start_n, seqlen_q, seqlen_k, lo_off, hi_off, BLOCK_N, BLOCK_M)
    elif CAUSAL_TYPE == 0:
        diag = 0
        full_lo = 0
    else:
        diag = causal_diag(seqlen_q, seqlen_k, CAUSAL_TYPE)
        # Row i sees key j iff j <= i + diag: rows before lo see none of ours,
        # rows from start_n + BLOCK_N - 1 - diag on see all of them.
        lo = tl.maximum(start_n - diag, 0)
        diag_end = tl.minimum(start_n + BLOCK_N - 1 - diag, seqlen_q)
        n_diag = tl.cdiv(tl.maximum(diag_end - lo, 0), BLOCK_M)
        full_lo = lo + n_diag * BLOCK_M
    if not LOCAL_WINDOW:
        n_full = tl.cdiv(tl.maximum(seqlen_q - full_lo, 0), BLOCK_M)

    q_zbase = Q + off_z.to(tl.int64) * stride_qz
    do_zbase = DO + off_z.to(tl.int64) * stride_doz
    if IS_VARLEN:
        q_zbase += q_start.to(tl.int64) * stride_qm
        do_zbase += q_start.to(tl.int64) * stride_dom
    lse_zbase = LSE + off_z.to(tl.int64) * stride_lse_z + q_start
    delta_zbase = Delta + off_z.to(tl.int64) * stride_delta_z + q_start
    hq_base = off_hk * group
    bh_base = off_z * num_heads_q + hq_base
    alibi_zbase = alibi_slopes + off_z * stride_alibi_z

    qk_scale = sm_scale * LOG2E
    dk = tl.zeros([BLOCK_N, BLOCK_DMODEL], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DMODEL if BLOCK_DV == 0 else BLOCK_DV], dtype=tl.float32)
    # Fixed-order sums over heads and row blocks: deterministic.
    if CAUSAL_TYPE != 0 or LOCAL_WINDOW:
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_zbase, do_zbase, lse_zbase, delta_zbase,
            stride_qh, stride_qm, stride_doh, stride_dom, stride_lse_h, stride_delta_h,
            lo, n_diag, group, hq_base, bh_base, offs_n, offs_d, offs_dv, head_dim,
            seqlen_q, diag, qk_scale, seed, philox_offset,
            max_seqlen_q, max_seqlen_k, dropout_p,
            lo_off, hi_off, sm_scale, softcap, alibi_zbase, seqlen_k,
            BLOCK_M, PADDED_HEAD, CAUSAL_TYPE != 0, ENABLE_DROPOUT, LOCAL_WINDOW, SCORE_MOD,
            PADDED_HEAD and BLOCK_DV == 0)
    dk, dv = _dkdv_tiles(
        dk, dv, k, v, q_zbase, do_zbase, lse_zbase, delta_zbase,
        stride_qh, stride_qm, stride_doh, stride_dom, stride_lse_h, stride_delta_h,
        full_lo, n_full, group, hq_base, bh_base, offs_n, offs_d, offs_dv, head_dim,
        seqlen_q, diag, qk_scale, seed, philox_offset,
        max_seqlen_q, max_seqlen_k, dropout_p,
        lo_off, hi_off, sm_scale, softcap, alibi_zbase, seqlen_k,
        BLOCK_M, PADDED_HEAD, False, ENABLE_DROPOUT, False, SCORE_MOD, PADDED_HEAD and BLOCK_DV == 0)
    if LOCAL_WINDOW:
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, q_zbase, do_zbase, lse_zbase, delta_zbase,
            stride_qh, stride_qm, stride_doh, stride_dom, stride_lse_h, stride_delta_h,
            tail_lo, n_tail, group, hq_base, bh_base, offs_n, offs_d, offs_dv, head_dim,
            seqlen_q, diag, qk_scale, seed, philox_offset,
            max_seqlen_q, max_seqlen_k, dropout_p,
            lo_off, hi_off, sm_scale, softcap, alibi_zbase, seqlen_k,
            BLOCK_M, PADDED_HEAD, False, ENABLE_DROPOUT, LOCAL_WINDOW, SCORE_MOD,
            PADDED_HEAD and BLOCK_DV == 0)

    dk = dk * sm_scale
    tl.store(dk_base + offs_n[:, None] * stride_dkn + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(dv_base + offs_n[:, None] * stride_dvn + offs_dv[None, :],
             dv.to(DV.dtype.element_ty), mask=v_mask)


# The feature scalars stay runtime values under the JIT, as in the AOT build.
@triton.jit(do_not_specialize=["stride_alibi_z", "window_left", "window_right", "window_align"])
def bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, Delta,
    cu_seqlens_q, cu_seqlens_k, philox_seed_ptr, philox_offset_ptr,
    sm_scale, dropout_p,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_doz, stride_doh, stride_dom,
    stride_dkz, stride_dkh, stride_dkn,
    stride_dvz, stride_dvh, stride_dvn,
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
    """dK, dV of softmax(sm_scale * Q K^T [causal]) [dropout] V.

    Q, K, V, DO  element pointers (fp16/bf16/fp32), last dim contiguous:
                 (b, m, h, d) at ptr + b*stride_z + h*stride_h + m*stride_m + d
                 (K/V: kv head and key n). Varlen: stride_*z = 0, row m of
                 sequence b is global row cu_seqlens[b] + m.
    DK, DV       outputs, K's element type, kv heads, own strides; dK/dV of a
                 kv head is the sum over the query heads of its group.
    LSE          *fp32, forward log-sum-exp (natural log, scaled scores):
                 LSE + b*stride_lse_z + h*stride_lse_h + row, row = m
                 (batched) or cu_seqlens_q[b] + m (varlen, stride_lse_z = 0);
                 -inf for rows that see no key.
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
    head_dim     runtime head size <= BLOCK_DMODEL (of V/dO/dV too unless
                 BLOCK_DV != 0: then they have BLOCK_DV columns).
    total_q, total_k  varlen: rows of the packed Q and K tensors (cu_seqlens
                 are clamped into them, seq_bounds.py); batched: ignored.
    alibi_slopes, stride_alibi_z, softcap, window_left, window_right,
    window_align  as the forward (LOCAL_WINDOW / SCORE_MOD only).
    """
    off_z, off_hk, group, q_start, seqlen_q, k_start, seqlen_k, start_n = key_block(
        cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
        IS_VARLEN, BLOCK_N)
    if start_n >= seqlen_k:
        return

    _dkdv_program(
        Q, K, V, DO, DK, DV, LSE, Delta, philox_seed_ptr, philox_offset_ptr,
        sm_scale, dropout_p,
        stride_qz, stride_qh, stride_qm,
        stride_kz, stride_kh, stride_kn,
        stride_vz, stride_vh, stride_vn,
        stride_doz, stride_doh, stride_dom,
        stride_dkz, stride_dkh, stride_dkn,
        stride_dvz, stride_dvh, stride_dvn,
        stride_lse_z, stride_lse_h,
        stride_delta_z, stride_delta_h,
        num_heads_q, max_seqlen_q, max_seqlen_k, head_dim,
        off_z, off_hk, group, start_n, q_start, seqlen_q, k_start, seqlen_k,
        alibi_slopes, stride_alibi_z, softcap, window_left, window_right, window_align,
        BLOCK_DMODEL, PADDED_HEAD, CAUSAL_TYPE, IS_VARLEN, ENABLE_DROPOUT,
        LOCAL_WINDOW, SCORE_MOD, BLOCK_M, BLOCK_N, BLOCK_DV)
