"""Flash attention forward (FlashAttention-2 style) for the AOT library.

Constexprs
  FUNCTIONAL (must match the call):
    BLOCK_DMODEL        16, 32, 64, 128, 256: power-of-two bucket >= head_dim
    PADDED_HEAD         head_dim != BLOCK_DMODEL (masks the d axis; head_dim % 8
                        == 0 keeps 16-byte loads, other sizes load element-wise)
    CAUSAL_TYPE         0 none, 1 top-left (key j <= query i),
                        2 bottom-right (j <= i + seqlen_k - seqlen_q, per sequence)
    IS_VARLEN           sequences given by cu_seqlens_q / cu_seqlens_k
    ENABLE_DROPOUT      Philox dropout on the probabilities
    LOCAL_WINDOW        runtime band mask (attn_mods.py): window_left / window_right
                        / window_align give sliding window, causal (right 0) or
                        both; compiled with CAUSAL_TYPE 0 only
    SCORE_MOD           0 none, 1 softcap, 2 ALiBi (attn_mods.py; needs LOCAL_WINDOW)
    BLOCK_DV            0: V and O have Q's head dim (head_dim / BLOCK_DMODEL);
                        64 or 128: V and O have exactly BLOCK_DV columns (no
                        padding) while Q/K keep head_dim (DeepSeek MLA: 192/128)
    (plus the element type of Q/K/V/O: fp16, bf16 or fp32; fp32 runs tl.dot
     with its default tf32 precision on GPUs)
  TUNING:
    BLOCK_M, BLOCK_N    query / key tile (powers of two, >= 16)
    num_warps, num_stages (launch options)

Grid: (cdiv(max_seqlen_q, BLOCK_M), num_seqs * num_heads_q, 1). M blocks past a
sequence's length exit at once (varlen).

Fast loads need 16-byte aligned rows: give Q/K/V/O a 16-byte pointer hint and
the stride_{q,k,v,o}{z,h,m|n} arguments a divisibility hint of 8 elements
(tt.divisibility 8 or 16); without them every K/V load is scalar. Varlen never
reads the z strides.

Default tuning (BLOCK_M, BLOCK_N, num_warps, num_stages), fp16/bf16:
  sm_90  D<=128: (128, 128, 8, 3)  D=256: (128, 64, 8, 2)
         padded D=128 bucket: (128, 64, 8, 3), padded D=256: (128, 32, 8, 2)
  sm_80  D<=64: (128, 128, 8, 3)   D=128: (128, 32, 8, 3)   D=256: (64, 64, 8, 2)
         padded D=256: (64, 32, 8, 2)
  dropout D<=128: (128, 64, 8, 2), D=256: (64, 32, 8, 2). fp32 tables (twice
  the shared memory) are in fwd_configs.py. The debug keep mask is a separate
  kernel (dropout_mask.py).
"""
import triton
import triton.language as tl

from .attn_mods import in_band, log2_scores, score_mod_params
from .dropout import keep_mask
from .prologue import key_range, philox_state, query_block

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
               lo, hi, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
               seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
               lo_off, hi_off, mod0, mod1,
               BLOCK_N: tl.constexpr, PADDED_HEAD: tl.constexpr, MASKED: tl.constexpr,
               CAUSAL: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
               LOCAL_WINDOW: tl.constexpr,
               SCORE_MOD: tl.constexpr, V_PADDED: tl.constexpr):
    """Key blocks [lo, hi) of one query block. MASKED=False is the hot loop:
    every key in range is valid and visible, so no score masks are built.
    LOCAL_WINDOW masks with the band [lo_off, hi_off] instead of CAUSAL's
    diagonal; SCORE_MOD != 0 modifies the scores (mod0, mod1: attn_mods.py).
    V columns are offs_dv, masked by head_dim only if V_PADDED."""
    # K is read transposed ([d, n]) so the first dot needs no tl.trans.
    # 32-bit in-tile offsets plus an advancing scalar base: fewer live registers
    # than a tile of 64-bit pointers.
    k_offs = offs_d[:, None] + offs_n[None, :] * stride_kn
    v_offs = offs_dv[None, :] + offs_n[:, None] * stride_vn
    k_ptr = k_base + lo * stride_kn
    v_ptr = v_base + lo * stride_vn
    d_ok = offs_d < head_dim
    for start_n in tl.range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            n_ok = cols < seqlen_k
            if PADDED_HEAD:
                k = tl.load(k_ptr + k_offs, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
            else:
                k = tl.load(k_ptr + k_offs, mask=n_ok[None, :], other=0.0)
        else:
            if PADDED_HEAD:
                k = tl.load(k_ptr + k_offs, mask=d_ok[:, None], other=0.0)
            else:
                k = tl.load(k_ptr + k_offs)
        qk = tl.dot(q, k)
        if SCORE_MOD != 0:
            # Modified scores are already scaled (log2 units).
            qk = log2_scores(qk, offs_m[:, None], cols[None, :], qk_scale, mod0, mod1, SCORE_MOD)
            tile_scale = 1.0
        else:
            tile_scale = qk_scale
        if MASKED:
            ok = n_ok[None, :]
            if LOCAL_WINDOW:
                ok = ok & in_band(offs_m[:, None], cols[None, :], lo_off, hi_off)
            elif CAUSAL:
                ok = ok & (cols[None, :] <= offs_m[:, None] + diag)
            qk = tl.where(ok, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1) * tile_scale)
            # A row may see no key yet (causal): keep exp2 arguments finite.
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * tile_scale)
            m_use = m_new
        # sm_scale > 0 lets the scale fold into one FMA per score.
        p = tl.math.exp2(qk * tile_scale - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
        acc = acc * alpha[:, None]
        if ENABLE_DROPOUT:
            keep = keep_mask(seed, philox_offset, bh, offs_m, cols, max_seqlen_q, max_seqlen_k, dropout_p)
            # l_i keeps the undropped sum: dropout scales after normalisation.
            p = tl.where(keep, p, 0.0)
        if MASKED:
            if V_PADDED:
                v = tl.load(v_ptr + v_offs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
            else:
                v = tl.load(v_ptr + v_offs, mask=n_ok[:, None], other=0.0)
        else:
            if V_PADDED:
                v = tl.load(v_ptr + v_offs, mask=d_ok[None, :], other=0.0)
            else:
                v = tl.load(v_ptr + v_offs)
        acc = tl.dot(p.to(v.dtype), v, acc)
        k_ptr += BLOCK_N * stride_kn
        v_ptr += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.jit
def _fwd_key_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
                    lo, full_lo, full_end, hi, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag,
                    qk_scale, seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                    lo_off, hi_off, mod0, mod1,
                    BLOCK_N: tl.constexpr, PADDED_HEAD: tl.constexpr, CAUSAL: tl.constexpr,
                    ENABLE_DROPOUT: tl.constexpr,
                    LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr, V_PADDED: tl.constexpr):
    """Masked key blocks [lo, full_lo) (LOCAL_WINDOW only: the band's left
    edge), unmasked [full_lo, full_end), then masked [full_end, hi)."""
    if LOCAL_WINDOW:
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
            lo, full_lo, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
            seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
            lo_off, hi_off, mod0, mod1,
            BLOCK_N, PADDED_HEAD, True, CAUSAL, ENABLE_DROPOUT,
            LOCAL_WINDOW, SCORE_MOD, V_PADDED)
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        full_lo, full_end, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
        seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
        lo_off, hi_off, mod0, mod1,
        BLOCK_N, PADDED_HEAD, False, CAUSAL, ENABLE_DROPOUT,
        LOCAL_WINDOW, SCORE_MOD, V_PADDED)
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
        full_end, hi, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag, qk_scale,
        seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
        lo_off, hi_off, mod0, mod1,
        BLOCK_N, PADDED_HEAD, True, CAUSAL, ENABLE_DROPOUT,
        LOCAL_WINDOW, SCORE_MOD, V_PADDED)
    return acc, l_i, m_i


# Sizes stay unspecialised under the JIT, as in the AOT build (strides keep
# the JIT's divisibility specialisation, matching the AOT hints).
@triton.jit(do_not_specialize=["num_seqs", "num_heads_q", "num_heads_k",
                               "max_seqlen_q", "max_seqlen_k", "head_dim",
                               "total_q", "total_k", "stride_alibi_z",
                               "window_left", "window_right", "window_align"])
def attn_fwd(
    Q, K, V, O, LSE,
    cu_seqlens_q, cu_seqlens_k,
    philox_seed_ptr, philox_offset_ptr,
    sm_scale, dropout_p,
    stride_qz, stride_qh, stride_qm,
    stride_kz, stride_kh, stride_kn,
    stride_vz, stride_vh, stride_vn,
    stride_oz, stride_oh, stride_om,
    stride_lse_z, stride_lse_h,
    num_seqs, num_heads_q, num_heads_k,
    max_seqlen_q, max_seqlen_k, head_dim, total_q, total_k,
    alibi_slopes, stride_alibi_z, softcap, window_left, window_right, window_align,
    BLOCK_DMODEL: tl.constexpr, PADDED_HEAD: tl.constexpr, CAUSAL_TYPE: tl.constexpr,
    IS_VARLEN: tl.constexpr, ENABLE_DROPOUT: tl.constexpr,
    LOCAL_WINDOW: tl.constexpr, SCORE_MOD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr = 0,
):
    """O = softmax(sm_scale * Q K^T [causal mask]) V, plus LSE.

    Q, K, V, O   element pointers (fp16/bf16/fp32), last dim contiguous.
                 Element (b, h, m, d) of Q is at Q + b*stride_qz + h*stride_qh
                 + m*stride_qm + d (K/V: kv head, n, stride_k*/stride_v*; O
                 like Q with stride_o*). Varlen: stride_*z are ignored (pass
                 0), row m of sequence b is global row cu_seqlens[b] + m.
                 In-sequence offsets (m * stride_qm etc.) are 32-bit.
    LSE          *fp32, LSE + b*stride_lse_z + h*stride_lse_h + row, row = m
                 (batched) or cu_seqlens_q[b] + m (varlen, stride_lse_z = 0).
                 LSE = ln(sum_j exp(sm_scale * q_m . k_j)) over the visible
                 keys j (natural log, scaled scores, no dropout); -inf for
                 a row that sees no key (its O row is 0).
    cu_seqlens_q, cu_seqlens_k  *i32 [num_seqs + 1] (varlen only, else 0).
    philox_seed_ptr, philox_offset_ptr  *i64 device scalars (dropout only).
    sm_scale     fp32 softmax scale, must be > 0.
    dropout_p    fp32 drop probability; kept probabilities scale by 1/(1-p).
    num_seqs     batch size, or number of varlen sequences (grid only).
    num_heads_q, num_heads_k  GQA: kv head = h // (num_heads_q // num_heads_k).
    max_seqlen_q, max_seqlen_k  batched: the sequence lengths; varlen: bounds
                 (grid, dropout stream layout); a longer
                 sequence is cut to its first max_seqlen rows (seq_bounds.py).
    head_dim     runtime head size <= BLOCK_DMODEL (of Q and K; of V and O too
                 unless BLOCK_DV != 0, when they have BLOCK_DV columns).
    total_q, total_k  varlen: rows of the packed Q/O/LSE and K/V tensors;
                 cu_seqlens are clamped into them (seq_bounds.py). Batched:
                 ignored.
    alibi_slopes *fp32, slope of (b, h) at b*stride_alibi_z + h (SCORE_MOD 2).
    softcap      fp32 > 0 (SCORE_MOD 1).
    window_left, window_right, window_align  the band (LOCAL_WINDOW;
                 attn_mods.py): -1 = unbounded; align 0 top-left, 1 bottom-right.
    """
    bh, off_z, off_h, off_hk, q_start, seqlen_q, k_start, seqlen_k, start_m = query_block(
        cu_seqlens_q, cu_seqlens_k, num_heads_q, num_heads_k, max_seqlen_q, max_seqlen_k, total_q, total_k,
        IS_VARLEN, CAUSAL_TYPE, LOCAL_WINDOW, BLOCK_M)
    if start_m >= seqlen_q:
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DMODEL)
    if BLOCK_DV == 0:
        offs_dv = offs_d
    else:
        offs_dv = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < seqlen_q
    d_ok = offs_d < head_dim

    # 64-bit base offsets; in-sequence offsets stay 32-bit. Varlen ignores the
    # z strides (the sequence start replaces them), so they need no
    # divisibility hint there.
    if IS_VARLEN:
        q_base = Q + off_h.to(tl.int64) * stride_qh + q_start.to(tl.int64) * stride_qm
        k_base = K + off_hk.to(tl.int64) * stride_kh + k_start.to(tl.int64) * stride_kn
        v_base = V + off_hk.to(tl.int64) * stride_vh + k_start.to(tl.int64) * stride_vn
        o_base = O + off_h.to(tl.int64) * stride_oh + q_start.to(tl.int64) * stride_om
    else:
        q_base = Q + off_z.to(tl.int64) * stride_qz + off_h.to(tl.int64) * stride_qh
        k_base = K + off_z.to(tl.int64) * stride_kz + off_hk.to(tl.int64) * stride_kh
        v_base = V + off_z.to(tl.int64) * stride_vz + off_hk.to(tl.int64) * stride_vh
        o_base = O + off_z.to(tl.int64) * stride_oz + off_h.to(tl.int64) * stride_oh

    q_ptrs = q_base + offs_m[:, None] * stride_qm + offs_d[None, :]
    if PADDED_HEAD:
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)

    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DMODEL if BLOCK_DV == 0 else BLOCK_DV], dtype=tl.float32)

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

    if PADDED_HEAD:
        if head_dim % 8 == 0:
            # (head_dim // 8) * 8 == head_dim here, but the compiler now knows
            # it is a multiple of 8: the d mask is constant over groups of 8
            # and K/V loads stay 16-byte vectors (cp.async) for 40, 72, ...
            acc, l_i, m_i = _fwd_key_blocks(
                acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
                lo, full_lo, full_end, hi, offs_m, offs_n, offs_d, offs_dv, (head_dim // 8) * 8, seqlen_k,
                diag, qk_scale, seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                lo_off, hi_off, mod0, mod1,
                BLOCK_N, PADDED_HEAD, CAUSAL_TYPE != 0, ENABLE_DROPOUT,
                LOCAL_WINDOW, SCORE_MOD, PADDED_HEAD and BLOCK_DV == 0)
        else:
            acc, l_i, m_i = _fwd_key_blocks(
                acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
                lo, full_lo, full_end, hi, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag,
                qk_scale, seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
                lo_off, hi_off, mod0, mod1,
                BLOCK_N, PADDED_HEAD, CAUSAL_TYPE != 0, ENABLE_DROPOUT,
                LOCAL_WINDOW, SCORE_MOD, PADDED_HEAD and BLOCK_DV == 0)
    else:
        acc, l_i, m_i = _fwd_key_blocks(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn,
            lo, full_lo, full_end, hi, offs_m, offs_n, offs_d, offs_dv, head_dim, seqlen_k, diag,
            qk_scale, seed, philox_offset, bh, max_seqlen_q, max_seqlen_k, dropout_p,
            lo_off, hi_off, mod0, mod1,
            BLOCK_N, PADDED_HEAD, CAUSAL_TYPE != 0, ENABLE_DROPOUT,
            LOCAL_WINDOW, SCORE_MOD, PADDED_HEAD and BLOCK_DV == 0)

    # Rows that saw no key have l = 0: write 0 and lse = -inf, not NaN.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    inv = 1.0 / l_safe
    if ENABLE_DROPOUT:
        inv = inv * (1.0 / (1.0 - dropout_p))
    out = acc * inv[:, None]
    lse = (m_i + tl.math.log2(l_i)) * LN2

    o_ptrs = o_base + offs_m[:, None] * stride_om + offs_dv[None, :]
    if PADDED_HEAD and BLOCK_DV == 0:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None])
    lse_ptrs = LSE + off_z.to(tl.int64) * stride_lse_z + off_h.to(tl.int64) * stride_lse_h \
        + q_start + offs_m
    tl.store(lse_ptrs, lse, mask=m_ok)
