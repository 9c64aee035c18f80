"""The persistent form of the sm_90 ping-pong forward (fwd_hopper.py, SCHEDULE
4): one CTA per SM walks the (query block, batch x head) tiles. The loader
warp loads the next tile's Q as soon as both consumers are done with the
current one's and keeps the K/V ring running across tiles, so a tile's
epilogue (O and LSE stores) and the next tile's first loads overlap instead
of leaving the SM idle between CTAs (FlashAttention-3's persistent
scheduling). Grid (min(tiles, SMs),): attn_fwd_hopper's entry allocates the
ring and barriers and runs these partitions."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .fwd_hopper_common import (HALF_ROWS, LOG2E, _acc_layout, _finish, _key_range, _rescaled, _softmax_step,
                                _tile)


@gluon.jit
def _tile_of(r):
    """Round r's tile of this CTA: round r holds tiles [r*P, r*P + P) (P CTAs),
    dealt left to right on even rounds and right to left on odd ones, so that
    with causal tiles (heaviest first within a (batch, head)) every CTA's sum
    of work stays within ~3% of the mean where a plain grid stride leaves
    it 8-65% above (tile t+P is lighter than tile t by a fixed step)."""
    P = gl.num_programs(0)
    pid = gl.program_id(0)
    return r * P + pid + (r % 2) * (P - 1 - 2 * pid)


@gluon.jit
def _geometry(t, num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """Tile t -> (batch, q head, kv head, first query row, key tiles, first
    masked key, causal diagonal offset). (batch, head) major, as the
    non-persistent grid runs: the CTAs running together share K and V in L2
    (a query-block-major order measured 6-10% slower: every CTA of a wave read
    another head's K/V). Causal: the last (heaviest) query block first."""
    num_m = gl.cdiv(seqlen_q, BLOCK_M)
    bh = t // num_m
    m_idx = t % num_m
    if CAUSAL_TYPE != 0:
        m_idx = num_m - 1 - m_idx
    off_z = bh // num_heads_q
    off_h = bh % num_heads_q
    off_hk = off_h // (num_heads_q // num_heads_k)
    start_m = m_idx * BLOCK_M
    diag, n_tiles, full_end = _key_range(start_m, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
    return off_z, off_h, off_hk, start_m, n_tiles, full_end, diag


@gluon.jit
def persistent_loader(q_desc, k_desc, v_desc, q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty,
            num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
            CAUSAL_TYPE: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    total = gl.cdiv(seqlen_q, BLOCK_M) * num_bh
    kv = 0
    it = 0
    for r in range(0, gl.cdiv(total, gl.num_programs(0))):
        t = _tile_of(r)
        if t < total:  # only the last round has CTAs without a tile
            off_z, off_h, off_hk, start_m, n_tiles, full_end, diag = _geometry(
                t, num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
            # Q of this tile once both consumers finished the previous tile's.
            mbarrier.wait(q_empty, (it - 1) & 1, pred=it > 0)
            mbarrier.expect(q_ready, q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [off_z, off_h, 0, start_m, 0], q_ready, _tile(q_smem, q_desc))
            for j in range(0, n_tiles):
                stage = kv % NUM_STAGES
                mbarrier.wait(empty.index(stage), ((kv // NUM_STAGES) - 1) & 1, pred=kv >= NUM_STAGES)
                bar = ready.index(stage)
                mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(k_desc, [off_z, off_hk, 0, j * BLOCK_N, 0], bar,
                                                _tile(k_ring.index(stage), k_desc))
                tma.async_copy_global_to_shared(v_desc, [off_z, off_hk, 0, j * BLOCK_N, 0], bar,
                                                _tile(v_ring.index(stage), v_desc))
                kv += 1
            it += 1


@gluon.jit
def _consumer(q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
              stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
              num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
              WHICH: gl.constexpr, HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr):
    """fwd_hopper._pp_consumer over a sequence of tiles: the ring index `kv`
    and the turn count `tc` run on across tiles (both consumers take the same
    number of turns per tile, so the alternation stays in step)."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = _acc_layout(NUM_WARPS, BLOCK_N)
    o_layout: gl.constexpr = _acc_layout(NUM_WARPS, HEAD_DIM)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    CAUSAL: gl.constexpr = CAUSAL_TYPE != 0
    my_turn = turn.index(WHICH)
    other_turn = turn.index(1 - WHICH)
    q = q_smem.slice(WHICH * HALF_ROWS, HALF_ROWS)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    qk_scale = sm_scale * LOG2E
    s_zero = gl.zeros([HALF_ROWS, BLOCK_N], gl.float32, layout=s_layout)
    total = gl.cdiv(seqlen_q, BLOCK_M) * num_bh
    kv = 0
    tc = 0
    it = 0
    for r in range(0, gl.cdiv(total, gl.num_programs(0))):
        t = _tile_of(r)
        if t < total:  # only the last round has CTAs without a tile
            _z, _h, _hk, start_m, n_tiles, full_end, diag = _geometry(
                t, num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
            offs_m = start_m + WHICH * HALF_ROWS + gl.arange(0, HALF_ROWS, layout=row_layout)
            m_i = gl.full([HALF_ROWS], float("-inf"), gl.float32, layout=row_layout)
            l_i = gl.full([HALF_ROWS], 0.0, gl.float32, layout=row_layout)
            acc = gl.zeros([HALF_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
            mbarrier.wait(q_ready, it & 1)
            if n_tiles > 0:
                stage = kv % NUM_STAGES
                mbarrier.wait(ready.index(stage), (kv // NUM_STAGES) & 1)
                mbarrier.wait(my_turn, tc & 1)
                s_tok = warpgroup_mma(q, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
                mbarrier.arrive(other_turn)
                tc += 1
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok, ))
                p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, 0, offs_m, offs_n, seqlen_k, diag,
                                                   full_end <= 0, CAUSAL, RESCALE_TH)
                p = gl.convert_layout(p.to(dtype), p_layout)
                prev = stage
                kv += 1
                for j in range(1, n_tiles):
                    stage = kv % NUM_STAGES
                    mbarrier.wait(ready.index(stage), (kv // NUM_STAGES) & 1)
                    mbarrier.wait(my_turn, tc & 1)
                    s_tok = warpgroup_mma(q, k_ring.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
                    o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
                    mbarrier.arrive(other_turn)
                    tc += 1
                    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok, ))
                    p_next, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, j * BLOCK_N, offs_m, offs_n,
                                                            seqlen_k, diag, j * BLOCK_N >= full_end, CAUSAL,
                                                            RESCALE_TH)
                    acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
                    p = gl.convert_layout(p_next.to(dtype), p_layout)
                    acc = _rescaled(acc, alpha, o_rows, RESCALE_TH)
                    mbarrier.arrive(empty.index(prev))
                    prev = stage
                    kv += 1
                mbarrier.wait(my_turn, tc & 1)
                o_tok = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
                mbarrier.arrive(other_turn)
                tc += 1
                acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok, p))
                mbarrier.arrive(empty.index(prev))
            # Every wgmma that read Q is complete: the loader may bring the next tile's.
            mbarrier.arrive(q_empty)
            # The head offsets again from t: not kept live across the tile loop.
            off_z, off_h, _hk2, _m, _n, _f, _d = _geometry(
                t, num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k, CAUSAL_TYPE, BLOCK_M, BLOCK_N)
            o_ptr = O + off_z.to(gl.int64) * stride_oz + off_h.to(gl.int64) * stride_oh
            lse_ptr = LSE + off_z.to(gl.int64) * stride_lse_z + off_h.to(gl.int64) * stride_lse_h
            _finish(acc, m_i, l_i, o_ptr, stride_om, offs_m, seqlen_q, lse_ptr, o_rows, HEAD_DIM, D_REAL)
            it += 1


@gluon.jit
def persistent_first(q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
           stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
           num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
           HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
           BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr):
    _consumer(q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
              stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
              num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
              0, HEAD_DIM, D_REAL, CAUSAL_TYPE, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH)


@gluon.jit
def persistent_second(q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
            stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
            num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
            HEAD_DIM: gl.constexpr, D_REAL: gl.constexpr, CAUSAL_TYPE: gl.constexpr,
            BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, RESCALE_TH: gl.constexpr):
    _consumer(q_smem, k_ring, v_ring, q_ready, q_empty, ready, empty, turn, O, LSE, sm_scale,
              stride_oz, stride_oh, stride_om, stride_lse_z, stride_lse_h,
              num_bh, num_heads_q, num_heads_k, seqlen_q, seqlen_k,
              1, HEAD_DIM, D_REAL, CAUSAL_TYPE, BLOCK_M, BLOCK_N, NUM_STAGES, RESCALE_TH)
