"""fused_experts helper kernels (tritonsrc/moe/fused_helpers.py) under
TRITON_INTERPRET=1: dropped-row zeroing and the dynamic fp8 scale."""
import os

os.environ["TRITON_INTERPRET"] = "1"


import pytest  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

import test_moe_interp  # noqa: E402,F401  (its patch: the interpreter's fp32 -> fp8 rounds to nearest even, as GPUs)
from tritonsrc.moe.fused_helpers import (fp8_amax_partial_kernel, fp8_dynamic_amax_chunks_kernel,  # noqa: E402
                                         fp8_dynamic_quant_chunks_kernel, fp8_scale_from_amax_kernel,
                                         zero_dropped_rows_kernel)


@pytest.mark.parametrize("with_map", [False, True])
@pytest.mark.parametrize("rows,cols,block_r,block_c", [(1, 7, 4, 16), (13, 40, 4, 16), (64, 33, 8, 32)])
def test_zero_dropped_rows(with_map, rows, cols, block_r, block_c):
    gen = torch.Generator().manual_seed(rows * 100 + cols)
    E_global, E = 10, 6
    ids = torch.randint(-1, E_global, (rows,), generator=gen, dtype=torch.int32)
    ids[0] = -1  # at least one dropped slot
    if with_map:
        emap = torch.full((E_global,), -1, dtype=torch.int32)
        emap[torch.randperm(E_global, generator=gen)[:E]] = torch.arange(E, dtype=torch.int32)
        local = torch.where(ids >= 0, emap[ids.clamp(min=0).long()], -1)
    else:
        emap = ids  # unused
        local = ids
    dropped = (local < 0) | (local >= E)
    full = torch.randn(rows, cols + 5, generator=gen).half()  # strided rows
    buf = full[:, 2:2 + cols]
    before = full.clone()
    zero_dropped_rows_kernel[(triton.cdiv(rows, block_r), 1, 1)](
        buf, ids, emap, rows, cols, buf.stride(0), E, emap.numel() if with_map else 0,
        HAS_EXPERT_MAP=with_map, BLOCK_R=block_r, BLOCK_C=block_c)
    assert torch.equal(buf[dropped], torch.zeros_like(buf[dropped]))
    keep = ~dropped[:, None] | (torch.arange(cols + 5) < 2) | (torch.arange(cols + 5) >= 2 + cols)
    assert torch.equal(full[keep], before[keep])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,num_partials", [(1, 7, 1), (37, 300, 5), (64, 1024, 64), (9, 130, 16)])
def test_dynamic_fp8_scale(dtype, M, K, num_partials):
    gen = torch.Generator().manual_seed(M + K)
    full = (torch.randn(M, K + 3, generator=gen) * 5).to(dtype)
    x = full[:, 1:1 + K]
    full[:, 0] = 1e4  # outside the view: must not count
    partial = torch.full((num_partials,), float("nan"))
    fp8_amax_partial_kernel[(num_partials, 1, 1)](x, partial, M, K, x.stride(0), num_partials,
                                                  BLOCK_M=2, BLOCK_K=128)
    scale = torch.full((1,), float("nan"))
    fp8_scale_from_amax_kernel[(1, 1, 1)](partial, scale, num_partials, BLOCK=4)
    ref = x.float().abs().amax().clamp(min=1e-10) / 448.0
    assert torch.equal(scale[0], ref)
    zeros = torch.zeros(4, 16, dtype=dtype)
    fp8_amax_partial_kernel[(2, 1, 1)](zeros, partial, 4, 16, 16, 2, BLOCK_M=2, BLOCK_K=16)
    fp8_scale_from_amax_kernel[(1, 1, 1)](partial, scale, 2, BLOCK=4)
    assert scale.item() == pytest.approx(1e-10 / 448.0)


def _dynamic_quant_chunks(x, q, scale, M, K, activation, block_k, block_p, ids=None, emap=None, num_experts=1):
    """The operator's two launches: one program per row chunk (one for empty x). With an
    activation, x's rows are slots: ids (default: all kept) and emap say which are dropped."""
    n = M * triton.cdiv(K, block_k)
    partials = torch.full((max(n, 1), ), float("nan"))  # poison: every entry must be written
    ids = torch.zeros(max(M, 1), dtype=torch.int32) if ids is None else ids
    emap_len = 0 if emap is None else emap.numel()
    fp8_dynamic_amax_chunks_kernel[(max(n, 1), 1, 1)](x, partials, ids, ids if emap is None else emap, M, K,
                                                      x.stride(0), num_experts, emap_len, ACTIVATION=activation,
                                                      BLOCK_K=block_k)
    fp8_dynamic_quant_chunks_kernel[(max(n, 1), 1, 1)](x, q, scale, partials, M, K, x.stride(0), q.stride(0),
                                                       ACTIVATION=activation, BLOCK_K=block_k, BLOCK_P=block_p)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("M,K,block_k,block_p", [(1, 7, 16, 4), (2, 300, 128, 4), (8, 130, 64, 4), (3, 64, 64, 4),
                                                 (2, 300, 128, 8), (5, 200, 64, 32)])
def test_dynamic_fp8_quant_in_chunks(dtype, M, K, block_k, block_p):
    """Scale and q in two launches of one row chunk per program, equal to the reference
    quantization (IEEE division, clamp to +-448, round to nearest e4m3) on strided rows;
    q's padding untouched. Partial last chunks (K not a multiple of block_k), and more
    partials than one load of block_p (6 to 24 chunks at block_p 4)."""
    gen = torch.Generator().manual_seed(M * 7 + K)
    full = (torch.randn(M, K + 3, generator=gen) * 5).to(dtype)
    x = full[:, 1:1 + K]
    full[:, 0] = 1e4  # outside the view: must not count
    q_full = torch.full((M, K + 16), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)  # poison (NaN)
    q = q_full[:, :K]
    scale = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(x, q, scale, M, K, -1, block_k, block_p)
    ref_scale = x.float().abs().amax().clamp(min=1e-10) / 448.0
    assert torch.equal(scale[0], ref_scale)
    ref_q = (x.float() / ref_scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    assert torch.equal(q.view(torch.uint8), ref_q.view(torch.uint8))
    assert (q_full[:, K:].view(torch.uint8) == 0x7F).all()


@pytest.mark.parametrize("M,K", [(0, 64), (3, 0)])
def test_dynamic_fp8_quant_in_chunks_of_empty_x(M, K):
    """Empty x: one program of each step, no chunk touched; the scale is the floor's."""
    x = torch.randn(max(M, 1), max(K, 1))
    q = torch.full((max(M, 1), max(K, 1)), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)
    scale = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(x, q, scale, M, K, -1, 64, 4)
    assert scale.item() == pytest.approx(1e-10 / 448.0)
    assert (q.view(torch.uint8) == 0x7F).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("activation", [0, 2])  # silu, gelu_tanh (the fused forms built)
@pytest.mark.parametrize("M,K,block_k", [(2, 300, 128), (8, 130, 64), (1, 64, 64)])
def test_dynamic_fp8_quant_with_the_activation(dtype, activation, M, K, block_k):
    """ACTIVATION >= 0: x is GEMM1's [gate | up] and both steps apply act(gate) * up
    themselves: bitwise act_and_mul_kernel followed by the plain chunked quantization,
    scale included."""
    from tritonsrc.moe.activation import act_and_mul_kernel
    gen = torch.Generator().manual_seed(M * 13 + K + activation)
    full = (torch.randn(M, 2 * K + 5, generator=gen) * 4).to(dtype)
    x = full[:, 3:3 + 2 * K]  # strided rows
    mid = torch.empty(M, K, dtype=dtype)
    act_and_mul_kernel[(M, triton.cdiv(K, 64))](mid, x, M, K, mid.stride(0), x.stride(0), ACTIVATION=activation,
                                                 BLOCK=64)
    q_ref = torch.empty(M, K, dtype=torch.float8_e4m3fn)
    s_ref = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(mid, q_ref, s_ref, M, K, -1, block_k, 4)
    q = torch.full((M, K), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)
    s = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(x, q, s, M, K, activation, block_k, 4)
    assert torch.equal(s, s_ref) and s.item() > 0
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@pytest.mark.parametrize("with_map", [False, True])
def test_dynamic_fp8_quant_skips_dropped_slots(with_map):
    """With the activation (fused_experts' GEMM2 input), rows of slots moe_align drops
    (id out of range, or mapped to -1) are GEMM1 rows never written: poisoned here with
    huge values and NaN, they must not reach the scale, which equals the scale of the
    kept rows alone; the kept rows' q is bitwise theirs."""
    from tritonsrc.moe.activation import act_and_mul_kernel
    M, K, E = 6, 130, 4
    gen = torch.Generator().manual_seed(17 + with_map)
    x = (torch.randn(M, 2 * K, generator=gen) * 3).to(torch.float16)
    if with_map:  # global experts 0..7, locals 0..3 on this rank, the rest -1
        emap = torch.tensor([2, -1, 0, -1, 3, 1, -1, -1], dtype=torch.int32)
        ids = torch.tensor([0, 1, 2, 6, 4, 9], dtype=torch.int32)  # slots 1, 3 map to -1; 5 is out of range
    else:
        emap = None
        ids = torch.tensor([0, 7, 2, -1, 3, 1], dtype=torch.int32)  # slots 1 (7 >= E), 3 (-1)
    dropped = [1, 3, 5] if with_map else [1, 3]
    kept = [r for r in range(M) if r not in dropped]
    x[dropped[0]] = 3e4
    x[dropped[1]] = float("nan")
    mid = torch.empty(len(kept), K, dtype=x.dtype)
    xk = x[kept].contiguous()
    act_and_mul_kernel[(len(kept), triton.cdiv(K, 64))](mid, xk, len(kept), K, mid.stride(0), xk.stride(0),
                                                         ACTIVATION=0, BLOCK=64)
    q_ref = torch.empty(len(kept), K, dtype=torch.float8_e4m3fn)
    s_ref = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(mid, q_ref, s_ref, len(kept), K, -1, 64, 4)
    q = torch.full((M, K), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)
    s = torch.full((1,), float("nan"))
    _dynamic_quant_chunks(x, q, s, M, K, 0, 64, 4, ids=ids, emap=emap, num_experts=E)
    assert torch.equal(s, s_ref) and s.item() > 0
    assert torch.equal(q[kept].view(torch.uint8), q_ref.view(torch.uint8))
