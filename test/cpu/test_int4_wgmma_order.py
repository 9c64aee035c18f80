"""The int4_wgmma experiment's k order (bench/experiments/int4_wgmma_kernel.py): the kernel visits
k in a permuted order so that the dequantized weights already sit in wgmma's operand registers.
Both operands must be permuted alike, or the dot sums wrong products. This emulates the kernel's
tensor ops (the PRMT outputs, join, reshape, permute) with torch on the CPU and checks the dot
against the plain one; and compiles the kernel for sm_90, whose convert_layout(assert_trivial=True)
proves that the permuted weights are the operand layout without data movement."""
import pytest
import torch

from bench.experiments import int4_wgmma_kernel as kern


def _operands(words, zp, x, block_k):
    """The kernel's logical weight [N, block_k] and activation [M, block_k] tiles, emulated."""
    n = words.shape[0]
    b = [(words >> (8 * i)) & 0xFF for i in range(4)]  # the word's bytes
    lo = [v & 0xF for v in b]
    hi = [v >> 4 for v in b]
    z = zp[:, None]

    def reg(v0, v1):  # one 32-bit register: two 16-bit values, low half first
        return torch.stack((v0 - z, v1 - z), dim=-1)

    l01, l23, h01, h23 = reg(lo[0], lo[1]), reg(lo[2], lo[3]), reg(hi[0], hi[1]), reg(hi[2], hi[3])
    # join(join(l01, l23), join(h01, h23)), then the halves: [N, word, byte bit 1, nibble, byte bit 0]
    t = torch.stack((torch.stack((l01, l23), dim=-2), torch.stack((h01, h23), dim=-2)), dim=-2)
    w = t.reshape(kern.bit_shape(n, block_k)).permute(kern.weight_perm(block_k)).reshape(n, block_k)
    m = x.shape[0]
    a = x.reshape(kern.bit_shape(m, block_k)).permute(kern.activation_perm(block_k)).reshape(m, block_k)
    return w, a


@pytest.mark.parametrize("block_k", [64, 128, 256])
def test_permuted_dot_equals_plain_dot(block_k):
    gen = torch.Generator().manual_seed(block_k)
    n, m = 16, 3
    words = torch.randint(0, 2 ** 32, (n, block_k // 8), generator=gen, dtype=torch.int64)
    zp = torch.randint(0, 16, (n, ), generator=gen, dtype=torch.int64)
    x = torch.randint(-50, 50, (m, block_k), generator=gen).double()
    # Memory order: weight k = 8 * word + 2 * byte + nibble (low nibble = even k).
    nib = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(n, block_k)
    plain = x @ (nib - zp[:, None]).double().T
    w, a = _operands(words, zp, x, block_k)
    assert torch.equal(a @ w.double().T, plain)
    # The check fails on a mismatched order: the activations left in memory order.
    assert not torch.equal(x @ w.double().T, plain)


@pytest.mark.parametrize("block_n,block_k,prefetch", [(128, 128, 2), (64, 256, 0), (128, 64, 1)])
def test_kernel_compiles_with_trivial_operand_conversion(block_n, block_k, prefetch):
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    names = ["a_ptr", "b_ptr", "c_ptr", "b_scale_ptr", "b_zp_ptr", "topk_weights_ptr", "sorted_token_ids_ptr",
             "expert_ids_ptr", "num_tokens_post_padded_ptr"]
    types = ["*bf16", "*u8", "*bf16", "*fp32", "*u8", "*fp32", "*i32", "*i32", "*i32"]
    ints = ["N", "K", "EM", "num_valid_tokens", "top_k", "stride_am", "stride_be", "stride_bn", "stride_cm",
            "stride_bse", "stride_bsn", "stride_bsk", "stride_bze", "stride_bzn", "stride_bzk", "group_size",
            "has_zp", "num_experts"]
    signature = dict(zip(names, types), **{p: "i32" for p in ints})
    consts = dict(MUL_ROUTED_WEIGHT=True, BLOCK_SIZE_M=16, BLOCK_SIZE_N=block_n, BLOCK_SIZE_K=block_k,
                  GROUP_SIZE_M=1, SPLIT_K=2, PREFETCH=prefetch, NUM_STAGES=4)
    signature.update({c: "constexpr" for c in consts})
    order = list(signature)
    src = GluonASTSource(fn=kern.int4_wgmma_kernel, signature=signature,
                         constexprs={(order.index(c), ): v for c, v in consts.items()},
                         attrs={(i, ): [["tt.divisibility", 16]] for i in range(len(names))})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    assert "wgmma.mma_async" in compiled.asm["ptx"]
