"""Programmatic dependent launch, the build side (kernel_rules.Kernel.pdl): a pdl
kernel takes USE_PDL, the build sets it on sm_90+ only (griddepcontrol does not
exist before), its sm_90 code waits for the predecessor before any other
instruction touches memory (decode GEMMs: except reading their block's expert id and
hinting L2 to fetch weights, tritonsrc/moe/l2_prefetch.py; never a store), and its
generated launcher asks the runtime for the programmatic launch. The runtime side: test_runtime_fake_driver.py."""
import re

import pytest

from python import build_plan, codegen_cpp, compile_kernel, rules
from python.compile_kernel import build_source, load_kernel_function

PDL_RULES = [r for r in rules.KERNELS if r.pdl]


def test_decode_chains_are_pdl():
    names = {r.name for r in PDL_RULES}
    for chain in (["moe_align_small", "fp8_dynamic_amax_chunks", "fp8_dynamic_quant_chunks", "fused_moe_gemm",
                   "act_and_mul", "moe_sum"],
                  ["kv_append", "attn_decode", "attn_decode_combine"], ["topk_softmax", "fused_moe_gemm_wq"]):
        assert set(chain) <= names


@pytest.mark.parametrize("rule", PDL_RULES, ids=lambda r: r.name)
def test_use_pdl_is_set_on_sm90_only(rule):
    fn = load_kernel_function(rule)
    assert "USE_PDL" in fn.arg_names
    f = rule.functionals(90)[0]
    cfg = rule.tuning.default(f, 90)
    assert build_source(rule, fn, f, cfg, 90).constants[(fn.arg_names.index("USE_PDL"),)] is True
    assert build_source(rule, fn, f, cfg, 80).constants[(fn.arg_names.index("USE_PDL"),)] is False


# Kernels whose successor is a decode GEMM or decode attention trigger it before their own wait
# (tritonsrc/pdl.py, let_successor_start_then_wait); of them only moe_dot_order_copy follows moe_align
# directly in fused_experts (its int4 GEMM reads expert ids before its wait only for L2 hints).
TRIGGER_FIRST = {"act_and_mul", "act_and_mul_group_quant_fp8", "fp8_dynamic_quant_chunks", "kv_append",
                 "act_and_mul_dot_order", "moe_dot_order_copy"}


@pytest.mark.parametrize("name", ["act_and_mul", "attn_decode_combine", "moe_sum", "fp8_dynamic_quant_chunks",
                                  "fp8_dynamic_amax_chunks", "act_and_mul_group_quant_fp8", "kv_append",
                                  "act_and_mul_dot_order", "moe_dot_order_copy"])
def test_sm90_cubin_waits_first_and_sm80_never(name):
    rule = next(r for r in rules.KERNELS if r.name == name)
    for arch in (80, 90):
        fs = rule.functionals(arch)
        if not fs:
            continue  # an fp8 kernel: not built for sm_80
        f = fs[0]
        c = compile_kernel.compile_one(rule, f, dict(rule.tuning.default(f, arch)), arch)
        ptx = c.asm["ptx"]
        if arch == 80:
            assert "griddepcontrol" not in ptx
            continue
        body = ptx[ptx.index(".entry"):]
        first_memory = re.search(r"\b(ld|st|atom|red|cp\.async)\.(global|param\.u64 .*global)", body)
        assert "griddepcontrol.wait" in body
        assert first_memory is None or body.index("griddepcontrol.wait") < first_memory.start()
        # the next kernel may launch once this one's wait is over, or (before a decode GEMM) at once
        trigger_first = body.index("griddepcontrol.launch_dependents") < body.index("griddepcontrol.wait")
        assert trigger_first == (name in TRIGGER_FIRST)


@pytest.mark.parametrize("name,functional", [
    ("fused_moe_gemm", {"ab_dtype": "fp8e4nv", "c_dtype": "bf16", "QUANT": 1, "MUL_ROUTED_WEIGHT": True,
                        "ALIGNED": True, "BLOCK_SIZE_M": 16, "SPLIT_K": 4, "ALIGNED16": True}),
    ("fused_moe_gemm_wq", {"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": True, "BLOCK_SIZE_M": 16,
                           "SPLIT_K": 1}),
])
def test_decode_gemm2_only_reads_ids_and_prefetches_before_the_wait(name, functional):
    """A decode GEMM2 asks L2 for its first weight tiles before griddepcontrol.wait: before it,
    global loads (the block's expert id and the padded slot count) and prefetch hints only."""
    rule = next(r for r in rules.KERNELS if r.name == name)
    c = compile_kernel.compile_one(rule, functional, dict(rule.tuning.default(functional, 90)), 90)
    ptx = c.asm["ptx"]
    before = ptx[ptx.index(".entry"):ptx.index("griddepcontrol.wait")]
    assert "prefetch.global.L2" in before
    assert not re.search(r"\b(st|atom|red|cp\.async)\.(global|shared)", before)
    assert len(re.findall(r"\bld\.global", before)) <= 2


def test_generated_launchers_ask_for_the_programmatic_launch():
    plan = build_plan.make_plan(rules, "ci", [90])
    by_name = {k["name"]: k for k in plan["kernels"]}
    for rule in rules.KERNELS:
        if rule.name not in by_name:
            continue
        src = codegen_cpp.source(rule, by_name[rule.name], "ci")
        assert ("/*pdl=*/true" in src) == rule.pdl, rule.name


@pytest.mark.parametrize("paged", [False, True])
def test_decode_attention_only_reads_inputs_and_prefetches_before_the_wait(paged):
    """attn_decode asks L2 for its split's first K/V rows before griddepcontrol.wait
    (tritonsrc/flash/kv_prefetch.py): before it, prefetch hints and global loads (cache_seqlens,
    block-table entries) only; Q, the predecessor's output, is read after it, and so is
    cache_seqlens again for the attention itself."""
    rule = next(r for r in rules.KERNELS if r.name == "attn_decode")
    f = next(f for f in rule.functionals(90) if f["PAGED"] == paged and f["dtype"] == "bf16")
    c = compile_kernel.compile_one(rule, f, dict(rule.tuning.default(f, 90)), 90)
    ptx = c.asm["ptx"]
    before = ptx[ptx.index(".entry"):ptx.index("griddepcontrol.wait")]
    assert "prefetch.global.L2" in before
    assert not re.search(r"\b(st|atom|red|cp\.async)\.(global|shared)", before)
    assert not re.search(r"\bld\.global\.v", before), "Q (16-byte loads) is read after the wait"
    # The attention's own key range comes from cache_seqlens read again after the wait (a
    # predecessor may write it): the hint's load is not reused.
    seqlens_addr = re.search(r"ld\.global\.b32 \{ %r\d+ \}, (\[ %rd\d+ \+ 0 \])", before).group(1)
    after = ptx[ptx.index("griddepcontrol.wait"):]
    assert re.search(r"ld\.global\.b32 \{ %r\d+ \}, " + re.escape(seqlens_addr), after)
    assert ptx.index("griddepcontrol.wait") < ptx.index("griddepcontrol.launch_dependents")
