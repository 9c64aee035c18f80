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

_M32 = 0xFFFFFFFF


def _halves16(v, dtype):
    """int64 tensor of 32-bit words -> (low, high) 16-bit floats of `dtype` as float64."""
    lo, hi = (v & 0xFFFF, (v >> 16) & 0xFFFF)
    return [h.to(torch.int16).view(dtype).double() for h in (lo, hi)]


def _pack16(lo, hi, dtype):
    """float64 halves -> a 32-bit word of two `dtype` values, rounded to nearest (as .rn)."""
    bits = [x.to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF for x in (lo, hi)]
    return bits[0] | (bits[1] << 16)


def run_ptx(asm, outputs, inputs):
    """Runs the dequantization's inline PTX on int64 tensors of 32-bit values: the few
    instructions it uses, with PTX's semantics ($i numbered outputs first, as the constraints)."""
    regs = {f"${i + outputs}": v & _M32 for i, v in enumerate(inputs)}

    def val(x):
        return regs[x] if x in regs else int(x, 0)

    for stmt in asm.strip().strip("{}").split(";"):
        stmt = stmt.strip()
        if not stmt or stmt.startswith(".reg"):
            continue
        op, rest = stmt.split(None, 1)
        d, *a = [x.strip() for x in rest.split(",")]
        if op == "mov.b32":
            r = val(a[0])
        elif op == "and.b32":
            r = val(a[0]) & val(a[1])
        elif op == "shr.b32":
            r = val(a[0]) >> val(a[1])
        elif op == "lop3.b32":
            x, y, z, lut = val(a[0]), val(a[1]), val(a[2]), val(a[3])
            r = 0
            for i in range(8):  # lut bit (x << 2 | y << 1 | z) of each bit position
                if lut >> i & 1:
                    r = r | ((x if i & 4 else ~x) & (y if i & 2 else ~y) & (z if i & 1 else ~z))
        elif op == "prmt.b32":
            x, y, sel = val(a[0]), val(a[1]), val(a[2])
            r = 0
            for i in range(4):  # result byte i: byte (sel nibble i) of {y, x}, x the low four bytes
                k = sel >> (4 * i) & 0x7
                src = x if k < 4 else y
                r = r | (((src >> (8 * (k % 4))) & 0xFF) << (8 * i))
        elif op in ("sub.rn.f16x2", "sub.rn.bf16x2", "fma.rn.f16x2"):
            dt = torch.bfloat16 if "bf16" in op else torch.float16
            xs, ys = _halves16(val(a[0]), dt), _halves16(val(a[1]), dt)
            if op.startswith("sub"):
                res = [xv - yv for xv, yv in zip(xs, ys)]
            else:
                zs = _halves16(val(a[2]), dt)
                res = [xv * yv + zv for xv, yv, zv in zip(xs, ys, zs)]  # exact in float64, one rounding
            r = _pack16(*res, dt)
        else:
            raise AssertionError(f"an instruction the emulation does not know: {op}")
        if isinstance(r, int):
            r = torch.tensor(r, dtype=torch.int64)
        regs[d] = r & _M32
    return [regs[f"${i}"] for i in range(outputs)]


def _dequant(words, zp, dtype):
    """The kernel's _dequant_words_* on the CPU: four [N, words] registers of two weights each."""
    z = zp[:, None]
    if dtype == torch.float16:
        pair = lambda v: v | (v << 16)  # noqa: E731  (the kernel's _pair)
        return run_ptx(kern.DEQUANT_FP16_ASM.value, 4, [words, pair(0x6400 | z), pair(0xD400 | (z << 4))])
    return run_ptx(kern.DEQUANT_BF16_ASM.value, 4, [words, (0x4300 | z) * 0x10001])


def _operands(words, zp, x, dtype):
    """The kernel's logical weight [N, block_k] and activation [M, block_k] tiles, emulated."""
    n, block_k = words.shape[0], words.shape[1] * 8
    fp16 = dtype == torch.float16
    r0, r1, r2, r3 = _dequant(words, zp, dtype)
    # join(join(r0, r1), join(r2, r3)), then the halves: the bit dims _weights_operand builds.
    r = torch.stack((torch.stack((r0, r1), dim=-1), torch.stack((r2, r3), dim=-1)), dim=-1)
    t = torch.stack(_halves16(r, dtype), dim=-1)
    w = t.reshape(kern.bit_shape(n, block_k)).permute(kern.weight_perm(block_k, fp16)).reshape(n, block_k)
    m = x.shape[0]
    a = x.reshape(kern.bit_shape(m, block_k)).permute(kern.activation_perm(block_k, fp16)).reshape(m, block_k)
    return w, a


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_dequantized_values_are_exact(dtype):
    """Every nibble at every position of a word, every zero point: q - zp exactly."""
    q = torch.arange(16, dtype=torch.int64)
    zp = torch.arange(16, dtype=torch.int64).repeat_interleave(16 * 8)
    pos = torch.arange(8, dtype=torch.int64).repeat_interleave(16).repeat(16)
    qs = q.repeat(8 * 16)
    words = (qs << (4 * pos)) | ((15 - qs) << (4 * ((pos + 1) % 8)))  # a different nibble beside it
    regs = _dequant(words[:, None], zp, dtype)
    got = torch.stack([torch.stack(_halves16(r[:, 0], dtype), dim=-1) for r in regs], dim=1).reshape(-1, 8)
    # Which nibble each output holds: the docstrings' order.
    order = [0, 4, 1, 5, 2, 6, 3, 7] if dtype == torch.float16 else [0, 2, 4, 6, 1, 3, 5, 7]
    nib = torch.stack([(words >> (4 * j)) & 0xF for j in order], dim=-1)
    assert torch.equal(got, (nib - zp[:, None]).double())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_k", [64, 128, 256])
def test_permuted_dot_equals_plain_dot(block_k, dtype):
    gen = torch.Generator().manual_seed(block_k)
    n, m = 16, 3
    words = torch.randint(0, 2 ** 32, (n, block_k // 8), generator=gen, dtype=torch.int64)
    zp = torch.randint(0, 16, (n, ), generator=gen, dtype=torch.int64)
    x = torch.randint(-50, 50, (m, block_k), generator=gen).double()
    # Memory order: weight k = 8 * word + 2 * byte + nibble (low nibble = even k).
    nib = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(n, block_k)
    plain = x @ (nib - zp[:, None]).double().T
    w, a = _operands(words, zp, x, dtype)
    assert torch.equal(a @ w.T, plain)
    # The check fails on a mismatched order: the activations left in memory order, or the
    # other dtype's order.
    assert not torch.equal(x @ w.T, plain)
    other = kern.activation_perm(block_k, dtype != torch.float16)
    assert not torch.equal(x.reshape(kern.bit_shape(m, block_k)).permute(other).reshape(m, block_k) @ w.T, plain)


def _corners():
    """Each functional's default, and each tuning form (register prefetch 1-2, the deepest ring)."""
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule
    for bk in (64, 128):
        f = {"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": True, "BLOCK_SIZE_M": 16, "BLOCK_SIZE_K": bk,
             "SPLIT_K": 4, "HAS_ZP": True, "X_DOT_ORDER": False}
        space = rule.tuning.all_configs(f, 90)
        yield f, rule.tuning.default(f, 90)
        for bn in (64, 128):
            yield f, max((c for c in space if c["BLOCK_SIZE_N"] == bn and c["PREFETCH"] == 0),
                         key=lambda c: c["NUM_STAGES"])
            yield f, dict(rule.tuning.default(f, 90), BLOCK_SIZE_N=bn, PREFETCH=2, NUM_STAGES=2, LOAD_DISTANCE=1)
    yield dict(f, dtype="fp16", MUL_ROUTED_WEIGHT=False, SPLIT_K=1), dict(rule.tuning.default(f, 90), PREFETCH=1,
                                                                          NUM_STAGES=2, LOAD_DISTANCE=1)
    for dtype in ("fp16", "bf16"):  # symmetric weights: the zero points' loads leave the loop
        g = dict(f, dtype=dtype, MUL_ROUTED_WEIGHT=False, SPLIT_K=1, BLOCK_SIZE_K=128, HAS_ZP=False)
        yield g, rule.tuning.default(g, 90)
    # Loads one and two tiles ahead (the default: the loop unrolled by two, its tiles copied in
    # pairs): both K tiles, 64 and 128 rows, with and without zero points, the routed weight's split.
    for bk, bn, zp, dtype in ((128, 64, True, "bf16"), (128, 64, False, "fp16"), (64, 64, True, "fp16"),
                              (128, 128, True, "bf16")):
        g = dict(f, dtype=dtype, BLOCK_SIZE_K=bk, HAS_ZP=zp)
        for distance in (1, 2):
            yield g, dict(rule.tuning.default(g, 90), BLOCK_SIZE_N=bn, LOAD_DISTANCE=distance)
    # Align blocks of 8 and 32 (wgmma N 8 / 32; bench/experiments/int4_wgmma.py --block-m, not in the
    # build).
    for block_m, dtype, distance in ((8, "bf16", 2), (8, "fp16", 1), (32, "bf16", 1), (32, "fp16", 2)):
        g = dict(f, dtype=dtype, BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=128)
        yield g, dict(rule.tuning.default(g, 90), LOAD_DISTANCE=distance)
    # Activations copied in the dot's k order (X_DOT_ORDER; int4_wgmma.py --x-dot-order, not in the
    # build): both dtypes and K tiles, blocks of 16 and 32, with and without zero points.
    for block_m, dtype, bk, zp in ((16, "bf16", 128, True), (16, "fp16", 64, True), (16, "fp16", 128, False),
                                   (32, "bf16", 128, True), (32, "fp16", 128, True)):
        g = dict(f, dtype=dtype, BLOCK_SIZE_M=block_m, BLOCK_SIZE_K=bk, HAS_ZP=zp, X_DOT_ORDER=True)
        yield g, rule.tuning.default(g, 90)
        if block_m == 16 and bk == 128:  # 5 CTAs an SM: 96 registers, no spills (the register form spills)
            yield g, dict(rule.tuning.default(g, 90), PAIR_BLOCKS=0, maxnreg=96)
            # Two blocks of an expert in one program (PAIR_BLOCKS, the default, capped at 128
            # registers) uncapped; the default with the routed weight's split.
            yield g, dict(rule.tuning.default(g, 90), maxnreg=0)
            g = dict(g, MUL_ROUTED_WEIGHT=True, SPLIT_K=4)
            yield g, rule.tuning.default(g, 90)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("block_k", [64, 128])
def test_dot_order_activations_is_the_kernels_permutation(block_k, dtype):
    """X_DOT_ORDER's host-side permutation (python/jit/moe_quant.dot_order_activations): every K tile
    of every row in the order the kernel gives its activation registers, so that each tile's dot with
    the emulated weight operand is the plain dot of that tile."""
    from python.jit.moe_quant import dot_order_activations

    gen = torch.Generator().manual_seed(block_k + 7)
    m, tiles, n = 3, 3, 16
    x = torch.randint(-50, 50, (m, tiles * block_k), generator=gen).to(dtype)  # exact in 16 bits
    xd = dot_order_activations(x, block_k)
    assert xd.shape == x.shape and xd.dtype == dtype and not torch.equal(xd, x)
    for t in range(tiles):
        words = torch.randint(0, 2 ** 32, (n, block_k // 8), generator=gen, dtype=torch.int64)
        zp = torch.randint(0, 16, (n, ), generator=gen, dtype=torch.int64)
        nib = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(n, block_k)
        tile = x[:, t * block_k:(t + 1) * block_k].double()
        w, _ = _operands(words, zp, tile, dtype)
        assert torch.equal(xd[:, t * block_k:(t + 1) * block_k].double() @ w.T, tile @ (nib - zp[:, None]).double().T)


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
    if config.get("PAIR_BLOCKS") and config.get("maxnreg") == 128:
        # The capped pair form spills 8 bytes, never inside a K loop.
        from tools.sass_loops import disassemble, loops
        code = disassemble(compiled.asm["cubin"])
        in_loops = [i for s, e in loops(code) for a, i in code if s <= a <= e]
        assert res["stack"] <= 8 and not [i for i in in_loops if re.search(r"\b(LDL|STL)\b", i)], res
    else:
        assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    ptx = compiled.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "griddepcontrol.wait" in ptx
    assert bool(re.search(r"cp\.async\.c[ag]\.shared\.global", ptx)) == (config["PREFETCH"] == 0)
    # GEMM2 (the routed weight) hints L2 for its first weight tiles before the dependency wait.
    assert ("prefetch.global.L2" in ptx) == functional["MUL_ROUTED_WEIGHT"]
    if functional["MUL_ROUTED_WEIGHT"]:
        assert ptx.index("prefetch.global.L2") < ptx.index("griddepcontrol.wait")
