"""GEMM1 with the gated activation in its epilogue (an experiment, not in the build).

fused_experts runs GEMM1 into cache13 = x @ w1[e]^T ([slots, 2N], gate | up halves, rounded to
x's dtype), then act_and_mul_kernel reads it back for cache2 = act(gate) * up ([slots, N]).
Here one program computes a gate tile (w1 rows n..n+BN) and the matching up tile (rows
N+n..N+n+BN) of the same slots and stores act(gate) * up: cache13 is never written, one launch
goes, and at prefill sizes the traffic of writing and re-reading [slots, 2N] (Mixtral-like
M=4096: ~0.94 GB) goes with it. Each half is rounded to the output dtype before the
activation, as the two-kernel path rounds cache13, so the math is the same; whether the bits
are depends on the compiler keeping each element's K order (bench/experiments/gated_gemm1.py
reports both).

16-bit activations and weights only (QUANT 0), the tile loop of grouped_gemm.fused_moe_kernel.
Grid: (cdiv(EM, BLOCK_SIZE_M) * cdiv(N, BLOCK_SIZE_N), 1, 1), N = the intermediate size.
"""
import triton
import triton.language as tl

from tritonsrc.moe.activation import _activation
from tritonsrc.moe.expert_tiles import block_slots, grouped_tile


@triton.jit
def gated_gemm1_kernel(a_ptr, b_ptr, c_ptr, sorted_token_ids_ptr, expert_ids_ptr, num_tokens_post_padded_ptr,
                       N, K, EM, num_valid_tokens, top_k, stride_am, stride_be, stride_bn, stride_cm, num_experts,
                       ACTIVATION: tl.constexpr, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr,
                       BLOCK_SIZE_K: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """c[slot, j] = act(x[slot // top_k] . b[e, j]) * (x[slot // top_k] . b[e, N + j]), j < N.

    a_ptr [rows, K] (row stride stride_am), b_ptr [E, 2N, K] (strides stride_be, stride_bn),
    c_ptr [slots, N] (row stride stride_cm); last dims contiguous; sorted ids as moe_align
    gives them for block size BLOCK_SIZE_M. ACTIVATION 0 silu, 1 gelu, 2 gelu_tanh.
    """
    pid_m, pid_n = grouped_tile(EM, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    if pid_m * BLOCK_SIZE_M >= tl.load(num_tokens_post_padded_ptr):
        return
    slot, slot_ok, slot64, offs_n, c_ptrs, c_mask = block_slots(pid_m, pid_n, sorted_token_ids_ptr, c_ptr, EM, N,
                                                                num_valid_tokens, stride_cm, BLOCK_SIZE_M,
                                                                BLOCK_SIZE_N)
    # A block of no valid expert (none from moe_align) reads no weight and writes zeros.
    e = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    e_ok = (e >= 0) & (e < num_experts)
    offs_bn = offs_n % N  # wrapped: B loads need no N mask (the store masks columns)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    a_ptrs = a_ptr + (slot // top_k).to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    g_ptrs = b_ptr + tl.where(e_ok, e, 0) * stride_be + offs_k[:, None] + offs_bn[None, :] * stride_bn
    u_ptrs = g_ptrs + N * stride_bn
    acc_g = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_SIZE_M, BLOCK_SIZE_N], dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_left = K - kb * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=slot_ok[:, None] & (offs_k[None, :] < k_left), other=0.0)
        g = tl.load(g_ptrs, mask=e_ok & (offs_k[:, None] < k_left), other=0.0)
        u = tl.load(u_ptrs, mask=e_ok & (offs_k[:, None] < k_left), other=0.0)
        acc_g = tl.dot(a, g, acc=acc_g)
        acc_u = tl.dot(a, u, acc=acc_u)
        a_ptrs += BLOCK_SIZE_K
        g_ptrs += BLOCK_SIZE_K
        u_ptrs += BLOCK_SIZE_K
    # Rounded as cache13 holds them, then act_and_mul_kernel's math.
    gate = acc_g.to(c_ptr.dtype.element_ty).to(tl.float32)
    up = acc_u.to(c_ptr.dtype.element_ty).to(tl.float32)
    tl.store(c_ptrs, (_activation(gate, ACTIVATION) * up).to(c_ptr.dtype.element_ty), mask=c_mask)
