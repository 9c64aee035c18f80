"""What the sm_90 Gluon forward kernels share (fwd_hopper.py: one CTA per query
block; fwd_hopper_persistent.py: one CTA per SM walking the blocks): accumulator
layouts, the shared-memory tile views, the online-softmax step, the causal key
range of a query block and the O / LSE epilogue."""
from triton.experimental import gluon
from triton.runtime.jit import constexpr_function
from triton.experimental.gluon import language as gl

LOG2E = gl.constexpr(1.4426950408889634)
LN2 = gl.constexpr(0.6931471805599453)
HALF_ROWS = gl.constexpr(64)  # query rows per warpgroup, and of each O store


@constexpr_function
def _acc_layout(num_warps, width):
    """A wgmma accumulator [rows, width]: warps stacked along M, 16 rows each."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, width, 16])


@gluon.jit
def _tile(smem, desc):
    """The 2-D [rows, D] shared-memory tile seen as the descriptor's box [1, 1, D/64, rows, 64]."""
    return smem._reinterpret(desc.dtype, desc.block_type.shape, desc.layout)


@constexpr_function
def _head_block(head_dim):
    """The head dim as the kernel's tensors hold it: the next power of two."""
    p = 1
    while p < head_dim:
        p *= 2
    return p


@constexpr_function
def _swizzle(head_dim):
    """Shared-memory swizzle of the Q/K/V tiles: 128 bytes (64-column TMA
    blocks) when the head dim is a multiple of 64, else 64 (32-column blocks)."""
    return 128 if head_dim % 64 == 0 else 64


@gluon.jit
def _store_o(out, o_ptr, stride_om, offs_m, seqlen_q, HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr):
    """Rows offs_m of O straight from the wgmma accumulator layout (a layout
    conversion would need shared memory the K/V ring already fills), masked
    at the sequence end (and past D_REAL when the head dim is padded)."""
    rows = gl.convert_layout(offs_m, gl.SliceLayout(1, out.type.layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, out.type.layout))
    ptrs = o_ptr + gl.expand_dims(rows.to(gl.int64) * stride_om, 1) + gl.expand_dims(cols, 0)
    mask = gl.expand_dims(rows < seqlen_q, 1)
    if D_REAL < HEAD_DIM:
        mask = mask & gl.expand_dims(cols < D_REAL, 0)
    gl.store(ptrs, out, mask=mask)


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, start_n, offs_m, offs_n, seqlen_k, diag, masked,
                  CAUSAL: gl.constexpr, RESCALE_TH: gl.constexpr = 0):
    """Online-softmax update for one score tile: the unnormalised
    probabilities, the new running max and sum, and the accumulator's rescale
    factor. Masks only where `masked` (sequence tail, causal diagonal).
    RESCALE_TH > 0 (log2 units): a row keeps its running max, and its factor
    is 1, until the tile's max exceeds it by more than RESCALE_TH (_rescaled
    skips the accumulator's multiply while every factor is 1). p stays below
    2**RESCALE_TH, which the fp32 sums and the 16-bit P of the next product
    hold at full precision; O and the LSE are the same sums."""
    if masked:
        cols = gl.expand_dims(start_n + offs_n, 0)
        ok = cols < seqlen_k
        if CAUSAL:
            ok = ok & (cols <= gl.expand_dims(offs_m, 1) + diag)
        s = gl.where(ok, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    if RESCALE_TH > 0:
        m_new = gl.where(m_new > m_i + RESCALE_TH, m_new, m_i)
    # A row that sees no key yet keeps exp2 arguments finite.
    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_use, 1))
    alpha = gl.exp2(m_i - m_use)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _rescaled(acc, alpha, o_rows: gl.constexpr, RESCALE_TH: gl.constexpr = 0):
    """acc with each row times its factor; with RESCALE_TH > 0 the multiply is
    skipped when every row kept its running max (_softmax_step), at the cost of
    one reduction across the warps. At head dim 256 the multiply is 128 of the
    serial loop's 506 instructions a tile."""
    if RESCALE_TH > 0:
        if gl.min(alpha, 0) < 1.0:
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
    else:
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
    return acc


@gluon.jit
def _finish(acc, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows: gl.constexpr,
            HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr):
    """Normalise and write O and the LSE. Rows that saw no key (l = 0) get
    O = 0 and LSE = -inf."""
    l_safe = gl.where(l_i == 0.0, 1.0, l_i)
    inv = gl.convert_layout(1.0 / l_safe, o_rows)
    _store_o((acc * gl.expand_dims(inv, 1)).to(o_ptr.dtype.element_ty), o_ptr, stride_om, offs_m, seqlen_q, HEAD_DIM,
             D_REAL)
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(lse_ptr + offs_m, lse, mask=offs_m < seqlen_q)


@gluon.jit
def _key_range(start_m, seqlen_q, seqlen_k, CAUSAL_TYPE: gl.constexpr, BLOCK_M: gl.constexpr,
               BLOCK_N: gl.constexpr):
    """The keys of the query block at start_m: (causal diagonal offset, key
    tiles [0, n_tiles), first key that needs a mask)."""
    if CAUSAL_TYPE == 0:
        diag = 0
        hi = seqlen_k
        full_end = (seqlen_k // BLOCK_N) * BLOCK_N
    else:
        if CAUSAL_TYPE == 1:
            diag = 0
        else:
            diag = seqlen_k - seqlen_q
        hi = gl.maximum(gl.minimum(gl.minimum(start_m + BLOCK_M, seqlen_q) + diag, seqlen_k), 0)
        # Keys seen by the block's first row are visible to every row of it.
        first_row_keys = gl.maximum(gl.minimum(start_m + diag + 1, seqlen_k), 0)
        full_end = (first_row_keys // BLOCK_N) * BLOCK_N
    return diag, gl.cdiv(hi, BLOCK_N), full_end


@gluon.jit
def _program_head(num_heads_q, num_heads_k, CAUSAL_TYPE: gl.constexpr):
    """(query block index, sequence, head, K/V head) of a (block, batch x head) program; causal
    calls take the heaviest query blocks first, for a shorter tail."""
    pid_m = gl.program_id(0)
    if CAUSAL_TYPE != 0:
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1)
    off_h = bh % num_heads_q
    return pid_m, bh // num_heads_q, off_h, off_h // (num_heads_q // num_heads_k)
