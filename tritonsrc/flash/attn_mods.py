"""Sliding-window band and score modifiers (softcap, ALiBi) shared by the
flash forward and backward kernels.

Band (LOCAL_WINDOW): query row i sees key j iff lo_off <= j - i <= hi_off,
with the diagonal at j = i (window_align 0, top-left) or at
j = i + seqlen_k - seqlen_q (window_align 1, bottom-right, flash-attn's):
    lo_off = diag - window_left   (window_left  = -1: unbounded)
    hi_off = diag + window_right  (window_right = -1: unbounded)
Causal is the band with window_right = 0, so one runtime-bounded kernel
covers causal, sliding window, both together and no mask at all. The
offsets are clamped to [-seqlen_q, seqlen_k] (no int32 overflow for any
window value; a clamped bound hides nothing more).

Each kernel splits a program's tiles into masked edges and an unmasked
middle from these offsets: tiles wholly outside the band are never visited.

Score modifiers (SCORE_MOD) act on the scaled score s = sm_scale * q.k, in
log2 units (the kernels' exp2 softmax):
    0  none
    1  softcap:  softcap * tanh(s / softcap)
    2  ALiBi:    s - slope * |i + seqlen_k - seqlen_q - j|   (flash-attn's bias)
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
SCORE_NONE = tl.constexpr(0)
SCORE_SOFTCAP = tl.constexpr(1)
SCORE_ALIBI = tl.constexpr(2)


@triton.jit
def band_offsets(seqlen_q, seqlen_k, window_left, window_right, window_align):
    """(lo_off, hi_off) of the band, int32, clamped to [-seqlen_q, seqlen_k]."""
    sq = seqlen_q.to(tl.int64)
    sk = seqlen_k.to(tl.int64)
    diag = tl.where(window_align != 0, sk - sq, 0)
    lo = tl.where(window_left < 0, -sq, diag - window_left.to(tl.int64))
    hi = tl.where(window_right < 0, sk, diag + window_right.to(tl.int64))
    lo = tl.minimum(tl.maximum(lo, -sq), sk)
    hi = tl.minimum(tl.maximum(hi, -sq), sk)
    return lo.to(tl.int32), hi.to(tl.int32)


@triton.jit
def in_band(rows, cols, lo_off, hi_off):
    """Broadcast (rows, cols) -> visibility; rows / cols already shaped."""
    d = cols - rows
    return (d >= lo_off) & (d <= hi_off)


@triton.jit
def band_key_range(start_m, seqlen_q, seqlen_k, lo_off, hi_off,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles of query rows [start_m, start_m + BLOCK_M):
    [lo, full_lo) masked, [full_lo, full_hi) every key visible to every row,
    [full_hi, hi) masked. lo, full_hi are multiples of BLOCK_N."""
    last = tl.minimum(start_m + BLOCK_M, seqlen_q) - 1
    hi = tl.minimum(tl.maximum(last + hi_off + 1, 0), seqlen_k)
    lo = tl.minimum(tl.maximum(start_m + lo_off, 0), seqlen_k)
    lo = (lo // BLOCK_N) * BLOCK_N
    # Keys visible to every row: j >= last + lo_off and j <= start_m + hi_off.
    full_lo = tl.minimum(tl.maximum(last + lo_off, 0), seqlen_k)
    full_lo = tl.minimum(tl.cdiv(full_lo, BLOCK_N) * BLOCK_N, hi)
    full_hi = tl.minimum(tl.maximum(start_m + hi_off + 1, 0), seqlen_k)
    full_hi = tl.maximum((full_hi // BLOCK_N) * BLOCK_N, full_lo)
    return lo, full_lo, full_hi, hi


@triton.jit
def band_row_blocks(start_n, seqlen_q, seqlen_k, lo_off, hi_off,
                    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Row blocks of keys [start_n, start_n + BLOCK_N) (dK/dV): n_a masked
    blocks from row_a, then n_b unmasked ones from row_b, then n_c masked
    ones from row_c (each block BLOCK_M rows)."""
    last = tl.minimum(start_n + BLOCK_N, seqlen_k) - 1
    # Row i sees key j iff j - hi_off <= i <= j - lo_off.
    row_lo = tl.minimum(tl.maximum(start_n - hi_off, 0), seqlen_q)
    row_hi = tl.minimum(tl.maximum(last - lo_off + 1, 0), seqlen_q)
    full_lo = tl.minimum(tl.maximum(last - hi_off, 0), seqlen_q)
    full_hi = tl.minimum(tl.maximum(start_n - lo_off + 1, 0), seqlen_q)
    n_a = tl.cdiv(tl.maximum(tl.minimum(full_lo, row_hi) - row_lo, 0), BLOCK_M)
    row_b = row_lo + n_a * BLOCK_M
    n_b = tl.maximum(full_hi - row_b, 0) // BLOCK_M
    row_c = row_b + n_b * BLOCK_M
    n_c = tl.cdiv(tl.maximum(row_hi - row_c, 0), BLOCK_M)
    return row_lo, n_a, row_b, n_b, row_c, n_c


@triton.jit
def score_mod_params(sm_scale, softcap, slope_ptr, seqlen_q, seqlen_k, SCORE_MOD: tl.constexpr):
    """(mod0, mod1) for log2_scores: softcap: (sm_scale / softcap,
    softcap * log2 e); ALiBi: (slope * log2 e, seqlen_k - seqlen_q)."""
    if SCORE_MOD == SCORE_SOFTCAP:
        mod0 = sm_scale / softcap
        mod1 = softcap * LOG2E
    elif SCORE_MOD == SCORE_ALIBI:
        mod0 = tl.load(slope_ptr) * LOG2E
        mod1 = seqlen_k - seqlen_q
    else:
        mod0 = 0.0
        mod1 = 0
    return mod0, mod1


@triton.jit
def _tanh(x):
    # tl.math has no tanh; 1 - 2 / (e^2x + 1) saturates to +-1 without NaN.
    return 1.0 - 2.0 / (tl.math.exp2(x * (2.0 * LOG2E)) + 1.0)


@triton.jit
def log2_scores(qk, rows, cols, qk_scale, mod0, mod1, SCORE_MOD: tl.constexpr):
    """Modified scaled scores in log2 units from the raw dot products qk
    (rows / cols broadcast to qk's shape; qk_scale = sm_scale * log2 e)."""
    if SCORE_MOD == SCORE_SOFTCAP:
        s = mod1 * _tanh(qk * mod0)
    elif SCORE_MOD == SCORE_ALIBI:
        dist = rows + mod1 - cols
        dist = tl.where(dist < 0, -dist, dist)
        s = qk * qk_scale - mod0 * dist.to(tl.float32)
    else:
        s = qk * qk_scale
    return s


@triton.jit
def score_grad(ds, s, mod1, SCORE_MOD: tl.constexpr):
    """dL/ds of the unmodified scaled score from dL/d(modified score):
    softcap multiplies by 1 - tanh^2 (tanh = s / (softcap log2 e)); ALiBi's
    bias is constant."""
    if SCORE_MOD == SCORE_SOFTCAP:
        t = s / mod1
        ds = ds * (1.0 - t * t)
    return ds
