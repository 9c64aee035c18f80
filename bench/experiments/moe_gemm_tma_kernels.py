"""Experimental MoE grouped-GEMM kernels for sm_90 (JIT; issue 18 item 1).

Same contract as the production kernel (tritonsrc/moe/grouped_gemm.py,
QUANT 0 only): C[slot] = A[slot // top_k] @ B[expert(block)]^T (* routed
weight), slots listed by moe_align's sorted_token_ids, blocks of BLOCK_M rows
owned by one expert (expert_ids), num_tokens_post_padded valid rows.

What differs, the levers under test:
  * the expert weights are read by TMA (B_TMA; False: cp.async as in production) through a HOST-side 3-D tensor
    descriptor over B [E, N, K] with a [1, BLOCK_N, BLOCK_K] box (the
    hardware zero-fills past N and K, so no masks and no address math per
    thread; the AOT runtime can pass such a descriptor once it has a
    tensor-descriptor Arg kind);
  * A is either gathered row by row (cp.async, as in production) or read by
    TMA from a copy pre-sorted into moe_align order (A_SORTED: a_sorted
    [EM, K], padding rows zero), the form GEMM2 could get for free if GEMM1
    wrote its output in sorted order;
  * persistent variant: one program per SM walking (m block, n block) tiles
    in the grouped order, with the K loop flattened into the tile loop so
    the next tile's loads overlap this tile's epilogue (Triton's persistent
    matmul design), optionally warp-specialized.
Tile order everywhere: GROUP_M consecutive M blocks per N column (an
expert's weight tile is read from HBM once and reused from L2).
"""
import triton
import triton.language as tl


@triton.jit
def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    in_group = GROUP_M * num_pid_n
    first_m = (tile // in_group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile % in_group) % group_m
    pid_n = (tile % in_group) // group_m
    return pid_m, pid_n


@triton.jit
def _block_rows(sorted_ids_ptr, expert_ids_ptr, pid_m, EM, num_valid_tokens, top_k, num_experts,
                BLOCK_M: tl.constexpr):
    """Slots of one M block, whether each is a real slot, the expert (clamped
    into [0, E) so the weight box stays inside B; expert_ok says whether the
    block's results count) and the A rows (token of each slot)."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = tl.load(sorted_ids_ptr + offs_m, mask=offs_m < EM, other=num_valid_tokens)
    slot_ok = (slot >= 0) & (slot < num_valid_tokens)
    expert = tl.load(expert_ids_ptr + pid_m)
    expert_ok = (expert >= 0) & (expert < num_experts)
    expert = tl.where(expert_ok, expert, 0)
    a_row = tl.where(slot_ok, slot // top_k, 0).to(tl.int64)
    return slot, slot_ok, expert, expert_ok, a_row


@triton.jit
def _load_a(a_ptr, a_desc, a_row, slot_ok, pid_m, k0, K, stride_am, BLOCK_M: tl.constexpr,
            BLOCK_K: tl.constexpr, A_SORTED: tl.constexpr):
    if A_SORTED:
        return a_desc.load([pid_m * BLOCK_M, k0])
    offs_k = k0 + tl.arange(0, BLOCK_K)
    return tl.load(a_ptr + a_row[:, None] * stride_am + offs_k[None, :],
                   mask=slot_ok[:, None] & (offs_k[None, :] < K), other=0.0)


@triton.jit
def _load_b(b_ptr, b_desc, expert, pid_n, k0, N, K, stride_be, stride_bn, BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr, B_TMA: tl.constexpr):
    """[BLOCK_N, BLOCK_K] of expert's weights: TMA box, or (B_TMA False, the
    production way) cp.async with the N offsets wrapped so no N mask is needed."""
    if B_TMA:
        return b_desc.load([expert, pid_n * BLOCK_N, k0]).reshape(BLOCK_N, BLOCK_K)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = k0 + tl.arange(0, BLOCK_K)
    ptrs = b_ptr + expert.to(tl.int64) * stride_be + offs_n[:, None] * stride_bn + offs_k[None, :]
    return tl.load(ptrs, mask=offs_k[None, :] < K, other=0.0)


@triton.jit
def _store_c(c_ptr, acc, slot, slot_ok, expert_ok, pid_n, N, stride_cm, topk_weights_ptr,
             MUL_ROUTED_WEIGHT: tl.constexpr, BLOCK_N: tl.constexpr):
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + slot, mask=slot_ok, other=0.0)
        acc = acc * w[:, None]
    acc = tl.where(expert_ok, acc, 0.0)  # a block of an expert outside [0, E) writes zeros
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + slot.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=slot_ok[:, None] & (offs_n[None, :] < N))


@triton.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k"])
def moe_gemm_tma_kernel(a_ptr, a_desc, b_ptr, b_desc, c_ptr, topk_weights_ptr, sorted_ids_ptr, expert_ids_ptr,
                        ntpp_ptr, N, K, EM, num_valid_tokens, top_k, stride_am, stride_be, stride_bn, stride_cm,
                        num_experts, MUL_ROUTED_WEIGHT: tl.constexpr, A_SORTED: tl.constexpr, B_TMA: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr):
    """One tile per program; grid cdiv(EM, BLOCK_M) * cdiv(N, BLOCK_N) like production."""
    num_pid_m = tl.cdiv(EM, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _tile_coords(tl.program_id(0), num_pid_m, num_pid_n, GROUP_M)
    if pid_m * BLOCK_M >= tl.load(ntpp_ptr):
        return
    slot, slot_ok, expert, expert_ok, a_row = _block_rows(sorted_ids_ptr, expert_ids_ptr, pid_m, EM,
                                                          num_valid_tokens, top_k, num_experts, BLOCK_M)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = _load_a(a_ptr, a_desc, a_row, slot_ok, pid_m, k0, K, stride_am, BLOCK_M, BLOCK_K, A_SORTED)
        b = _load_b(b_ptr, b_desc, expert, pid_n, k0, N, K, stride_be, stride_bn, BLOCK_N, BLOCK_K, B_TMA)
        acc = tl.dot(a, b.T, acc)
    _store_c(c_ptr, acc, slot, slot_ok, expert_ok, pid_n, N, stride_cm, topk_weights_ptr, MUL_ROUTED_WEIGHT,
             BLOCK_N)


@triton.jit(do_not_specialize=["EM", "num_valid_tokens", "top_k", "num_programs"])
def moe_gemm_tma_persistent_kernel(a_ptr, a_desc, b_ptr, b_desc, c_ptr, topk_weights_ptr, sorted_ids_ptr,
                                   expert_ids_ptr, ntpp_ptr, N, K, EM, num_valid_tokens, top_k, stride_am, stride_be,
                                   stride_bn, stride_cm, num_experts, num_programs,
                                   MUL_ROUTED_WEIGHT: tl.constexpr, A_SORTED: tl.constexpr, B_TMA: tl.constexpr,
                                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                                   GROUP_M: tl.constexpr, FLATTEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):
    """num_programs programs (= SMs) walk the valid tiles: the M blocks below
    num_tokens_post_padded only, so padding blocks cost nothing."""
    num_pid_m = tl.load(ntpp_ptr) // BLOCK_M  # moe_align pads every expert to a multiple of BLOCK_M
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_tiles = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    tile_c = tl.program_id(0) - num_programs
    for tile in tl.range(tl.program_id(0), num_tiles, num_programs, flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        slot, slot_ok, expert, expert_ok, a_row = _block_rows(sorted_ids_ptr, expert_ids_ptr, pid_m, EM,
                                                              num_valid_tokens, top_k, num_experts, BLOCK_M)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for kt in range(k_tiles):
            k0 = kt * BLOCK_K
            a = _load_a(a_ptr, a_desc, a_row, slot_ok, pid_m, k0, K, stride_am, BLOCK_M, BLOCK_K, A_SORTED)
            b = _load_b(b_ptr, b_desc, expert, pid_n, k0, N, K, stride_be, stride_bn, BLOCK_N, BLOCK_K, B_TMA)
            acc = tl.dot(a, b.T, acc)
        # The epilogue recomputes its tile from its own counter (as Triton's
        # persistent matmul does) so the flattened loop's prologue of the next
        # tile does not have to keep this tile's values alive.
        tile_c += num_programs
        pid_m_c, pid_n_c = _tile_coords(tile_c, num_pid_m, num_pid_n, GROUP_M)
        slot_c, slot_ok_c, _e, expert_ok_c, _r = _block_rows(sorted_ids_ptr, expert_ids_ptr, pid_m_c, EM,
                                                             num_valid_tokens, top_k, num_experts, BLOCK_M)
        _store_c(c_ptr, acc, slot_c, slot_ok_c, expert_ok_c, pid_n_c, N, stride_cm, topk_weights_ptr,
                 MUL_ROUTED_WEIGHT, BLOCK_N)
