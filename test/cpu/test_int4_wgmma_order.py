"""The int4_wgmma experiment's k order (tritonsrc/moe/grouped_gemm_wq_hopper.py): the kernel visits
k in a permuted order so that the dequantized weights already sit in wgmma's operand registers.
Both operands must be permuted alike, or the dot sums wrong products. This emulates the kernel's
tensor ops (the PRMT outputs, join, reshape, permute) with torch on the CPU and checks the dot
against the plain one; and compiles the kernel for sm_90, whose convert_layout(assert_trivial=True)
proves that the permuted weights are the operand layout without data movement."""
import re

import pytest
import torch

from tritonsrc.moe import grouped_gemm_wq_hopper as kern


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


def _corners():
    """Each functional's default, and each tuning form (register prefetch 1-2, the deepest ring)."""
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule
    for bk in (64, 128):
        f = {"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": True, "BLOCK_SIZE_M": 16, "BLOCK_SIZE_K": bk,
             "SPLIT_K": 4}
        space = rule.tuning.all_configs(f, 90)
        yield f, rule.tuning.default(f, 90)
        for bn in (64, 128):
            yield f, max((c for c in space if c["BLOCK_SIZE_N"] == bn and c["PREFETCH"] == 0),
                         key=lambda c: c["NUM_STAGES"])
            yield f, dict(rule.tuning.default(f, 90), BLOCK_SIZE_N=bn, PREFETCH=2, NUM_STAGES=2)
    yield dict(f, dtype="fp16", MUL_ROUTED_WEIGHT=False, SPLIT_K=1), dict(rule.tuning.default(f, 90), PREFETCH=1,
                                                                          NUM_STAGES=2)


@pytest.mark.parametrize("functional,config", list(_corners()), ids=str)
def test_build_compiles_with_trivial_operand_conversion(functional, config):
    """The build's compile of the rule (compile_kernel.compile_one): convert_layout(assert_trivial=True)
    raises at compile time if the permuted weights are not wgmma's operand layout; no spills."""
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    from python import compile_kernel
    from python.cubin_resources import resources
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    compiled = compile_kernel.compile_one(rule, functional, config, 90)
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "griddepcontrol.wait" in ptx
    assert bool(re.search(r"cp\.async\.c[ag]\.shared\.global", ptx)) == (config["PREFETCH"] == 0)
    # GEMM2 (the routed weight) hints L2 for its first weight tiles before the dependency wait.
    assert ("prefetch.global.L2" in ptx) == functional["MUL_ROUTED_WEIGHT"]
    if functional["MUL_ROUTED_WEIGHT"]:
        assert ptx.index("prefetch.global.L2") < ptx.index("griddepcontrol.wait")
