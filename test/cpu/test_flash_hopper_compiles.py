"""The sm_90 flash forward (rules_flash_hopper.py, tritonsrc/flash/fwd_hopper.py)
compiles ahead of time without a GPU through the build's own compile path,
without spills and within the shared-memory limit, and the generated launcher
passes exactly the parameters the kernel declares (a TMA descriptor is its
CUtensorMap, then shape and strides). The GPU side: test/gpu/test_flash_hopper_gpu.py."""
import re

import pytest


pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from python import codegen_cpp, compile_kernel  # noqa: E402
from python.cubin_resources import resources  # noqa: E402
from python.kernel_rules import TmaArg  # noqa: E402
from python.rules_flash_hopper import PERSISTENT_HEAD_DIMS  # noqa: E402
from python.rules_flash_hopper import attn_fwd_hopper as RULE  # noqa: E402

SM90_MAX_SHARED = 232448  # 227 KiB of dynamic shared memory per block


def _compile(functional, config):
    return compile_kernel.compile_one(RULE, functional, config, 90)


# (functional, config): the D=128 ping-pong default, the serial kernel and the persistent one.
CASES = [
    ({"dtype": "bf16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 2}, None),
    ({"dtype": "fp16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 0}, None),
    ({"dtype": "fp16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 1},
     {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 0, "RESCALE_TH": 0, "num_warps": 8, "maxnreg": 0}),
    ({"dtype": "bf16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": 0}, None),  # serial, maxnreg 128
    ({"dtype": "fp16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": 2}, None),  # the same, with the diagonal's masking
]
# ... and the persistent schedule's (SCHEDULE 4) forms with the most registers
# live: 128-key tiles at every head dim it serves, and causal 64-key tiles at
# the widest (the rest run in test/gpu/test_flash_hopper_gpu.py's JIT test).
_PERSISTENT = {"BLOCK_M": 128, "NUM_STAGES": 3, "SCHEDULE": 4, "RESCALE_TH": 0, "num_warps": 4, "maxnreg": 0}
CASES += [({"dtype": "fp16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": 0}, dict(_PERSISTENT, BLOCK_N=128))
          for D in PERSISTENT_HEAD_DIMS]
CASES += [({"dtype": "bf16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 2}, dict(_PERSISTENT, BLOCK_N=64, NUM_STAGES=4))]
# ... and SCHEDULE 5 (K and V released apart), the ping-pong's widest forms.
CASES += [({"dtype": dtype, "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal},
           {"BLOCK_M": 128, "BLOCK_N": n, "NUM_STAGES": st, "SCHEDULE": 5, "RESCALE_TH": 0, "num_warps": 4,
            "maxnreg": 0})
          for D, n, st, dtype, causal in ((128, 128, 3, "bf16", 2), (64, 128, 3, "fp16", 0), (96, 64, 4, "bf16", 1),
                                          (256, 64, 2, "fp16", 2), (256, 64, 2, "bf16", 0), (192, 64, 3, "bf16", 2))]


def test_every_persistent_candidate_is_a_tested_form():
    """The rule's persistent candidates are the forms compiled above (or narrower ones)."""
    for D in PERSISTENT_HEAD_DIMS:
        for causal in (0, 1, 2):
            f = {"dtype": "fp16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": causal}
            for c in RULE.tuning.all_configs(f, 90):
                if c["SCHEDULE"] == 4:
                    assert (c["BLOCK_N"], c["NUM_STAGES"]) in ((128, 3), (64, 4)), c
                    assert c["BLOCK_N"] == 64 or causal == 0, c


def _two_cta_serial_configs():
    """Head dim 64's serial 8-warp candidates: they run two CTAs per SM only within 128 registers."""
    f = {"dtype": "bf16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": 0}
    return [c for c in RULE.tuning.all_configs(f, 90) if c["SCHEDULE"] == 0 and c["num_warps"] == 8]


@pytest.mark.parametrize("config", _two_cta_serial_configs(), ids=lambda c: f"n{c['BLOCK_N']}st{c['NUM_STAGES']}")
def test_head_dim_64_serial_candidates_fit_two_ctas_per_sm(config):
    """The AOT form of every candidate the tuner may pick fits 128 registers. The tuner times
    the JIT, which specializes on the call's values (127 registers for the uncapped 128-key
    form, 130 in the AOT build): an uncapped pick ran at 0.65-0.8x in bench_flash."""
    res = resources(_compile({"dtype": "bf16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": 0}, config).asm["cubin"])
    assert res["n_regs"] <= 128 and res["local"] == 0, (config, res)


def _ptx_params(ptx):
    entry = re.search(r"\.entry\s+\w+\s*\((.*?)\)", ptx, re.S).group(1)
    out = []
    for p in entry.split(","):
        p = p.strip()
        if ".b8" in p:
            out.append("tensormap" if re.search(r"\.align 64 \.b8 \w+\[128\]", p) else p)
        else:
            out.append(re.search(r"\.param \.(\w+)", p).group(1))
    return out


def _expected_params(rule):
    """What the generated launcher passes, in order (codegen_cpp._param_refs)."""
    kinds = {"*": "u64", "i32": "u32", "fp32": "f32"}
    out = []
    for a in rule.args:
        if isinstance(a, TmaArg):
            out += ["tensormap"] + ["u32"] * len(a.block) + ["u64"] * len(a.block)
        else:
            out.append(kinds["*" if a.is_pointer else a.base])
    return out + ["u64", "u64"]  # Triton's global and profile scratch pointers


@pytest.mark.parametrize("functional,config", CASES, ids=lambda x: str(x))
def test_compiles_without_spills_and_params_match_the_launcher(functional, config):
    config = config or RULE.tuning.default(functional, 90)
    compiled = _compile(functional, config)  # also checks the TMA metadata against the rule
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    if config.get("maxnreg"):  # the cap that lets two 8-warp CTAs share an SM holds
        assert res["n_regs"] <= config["maxnreg"]
    assert int(compiled.metadata.shared) <= SM90_MAX_SHARED
    assert int(compiled.metadata.global_scratch_size) == 0, "host descriptors need no device scratch"
    assert _ptx_params(compiled.asm["ptx"]) == _expected_params(RULE)
    assert "cp.async.bulk.tensor.5d" in compiled.asm["ptx"], "Q/K/V move by 5-D TMA"
    refs = [r for a in RULE.args for r in codegen_cpp._param_refs(a)] + ["&scratch_global", "&scratch_profile"]
    assert len(refs) == len(_expected_params(RULE))


def test_generated_launcher_encodes_every_descriptor():
    plan = {"entries": []}
    src = codegen_cpp.source(RULE, plan, "ci")
    tma = [a for a in RULE.args if isinstance(a, TmaArg)]
    for j, a in enumerate(tma):
        assert f"encode_tma(*t.cu, args.{a.name}, f.dtype, 5, boxes[{j}]" in src
    assert f"e.tma[t.bound->variant - e.slot->variants] + config * {len(tma)};" in src
    assert "TmaTensor q_desc;" in codegen_cpp.header(RULE)


def test_generated_boxes_are_what_the_build_checks():
    """The launcher's box and swizzle per compiled config are generated from
    TmaArg.encoding, the values compile_kernel.check_tma_meta holds every
    compiled kernel to (no second copy of the swizzle rule in C++)."""
    from python import build_plan, rules

    plan = build_plan.make_plan(rules, "gputest", [90])
    pk = next(k for k in plan["kernels"] if k["name"] == RULE.name)
    src = codegen_cpp.source(RULE, pk, "gputest")
    tma = [a for a in RULE.args if isinstance(a, TmaArg)]
    swizzles = ["CU_TENSOR_MAP_SWIZZLE_NONE", "CU_TENSOR_MAP_SWIZZLE_32B", "CU_TENSOR_MAP_SWIZZLE_64B",
                "CU_TENSOR_MAP_SWIZZLE_128B"]
    seen = set()
    for i, e in enumerate(pk["entries"]):
        for v in e["variants"]:
            rows = []
            for c in v["configs"]:
                for a in tma:
                    meta = a.expected_meta(e["functional"], c["values"])
                    rows.append(f"{{{{{', '.join(map(str, meta['block_size']))}}}, {swizzles[meta['swizzle']]}}}")
                    seen.add((e["functional"]["BLOCK_DMODEL"], meta["swizzle"]))
            assert f"const TmaBox kTma_f{i}_sm{v['arch']}[] = {{{', '.join(rows)}}};" in src
    # head dims that are multiples of 64 take 128-byte swizzled 64-column boxes, 96 takes 64-byte 32-column ones
    assert (128, 3) in seen and (96, 2) in seen, seen


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32", "fp8e4nv"])
@pytest.mark.parametrize("block", [(1, 128, 1, 64), (1, 64, 1, 128), (4, 32), (128, 16), (2, 8), (1, 4, 1, 256)])
def test_swizzle_rule_is_tritons_default(dtype, block):
    """TmaArg.swizzle_bytes (which the generated launcher's tables carry to
    C++) is the swizzle of Triton's default NVMMA layout for the block."""
    import triton.language as tl
    from triton.experimental.gluon.language._layouts import NVMMASharedLayout

    from python.kernel_rules import TMA_ELEMENT

    ty = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32, "fp8e4nv": tl.float8e4nv}[dtype]
    want = NVMMASharedLayout.get_default_for(list(block), ty).swizzle_byte_width
    assert TmaArg.swizzle_bytes(block, TMA_ELEMENT[dtype][0]) == want


def test_a_wrong_descriptor_rule_fails_the_build(monkeypatch):
    """If the launcher's encoding disagreed with the kernel (here: the
    element-type table says bf16 for fp16 data), the compile step refuses the cubin."""
    from python import kernel_rules

    functional = {"dtype": "fp16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 0}
    config = {"BLOCK_M": 128, "BLOCK_N": 64, "NUM_STAGES": 2, "SCHEDULE": 0, "RESCALE_TH": 0, "num_warps": 8,
              "maxnreg": 0}
    monkeypatch.setitem(kernel_rules.TMA_ELEMENT, "fp16", (2, kernel_rules.TMA_ELEMENT["bf16"][1]))
    with pytest.raises(ValueError, match="TMA argument"):
        _compile(functional, config)


def _lazy_rescale_forms():
    """The RESCALE_TH > 0 candidates (the rule offers them at head dim 256 only)."""
    f = {"dtype": "bf16", "BLOCK_DMODEL": 256, "CAUSAL_TYPE": 0}
    return [(f, c) for c in RULE.tuning.all_configs(f, 90) if c["RESCALE_TH"]]


@pytest.mark.parametrize("functional,config", _lazy_rescale_forms(),
                         ids=lambda x: f"D{x['BLOCK_DMODEL']}" if "BLOCK_DMODEL" in x else
                         f"s{x['SCHEDULE']}n{x['BLOCK_N']}st{x['NUM_STAGES']}r{x['maxnreg']}")
def test_lazy_rescale_adds_no_spill(functional, config):
    """The lazy rescale's branch and its reduction across the warps add registers: a candidate
    spills no more than the same config with the eager rescale (none where that one has none;
    when the lazy form was offered at head dim 128 too, its persistent 128-key form spilled 40 bytes)."""
    lazy = resources(_compile(functional, config).asm["cubin"])
    eager = resources(_compile(functional, dict(config, RESCALE_TH=0)).asm["cubin"])
    spilled = lambda r: r["stack"] + r["local"]  # noqa: E731
    assert spilled(lazy) == 0 or 0 < spilled(lazy) <= spilled(eager), (functional, config, lazy, eager)
