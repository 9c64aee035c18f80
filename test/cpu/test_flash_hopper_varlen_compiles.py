"""The sm_90 varlen forward (rules_flash_hopper.attn_fwd_hopper_varlen, tritonsrc/flash/fwd_hopper_varlen.py)
compiles ahead of time without a GPU: every candidate of the rule, without spills, within the
shared-memory limit and the 128-register cap where it asks for it, with the parameters the generated
launcher passes. The GPU side: test/gpu/test_flash_hopper_varlen_gpu.py."""
import pytest

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from python import compile_kernel  # noqa: E402
from python.cubin_resources import resources  # noqa: E402
from python.rules_flash_hopper import attn_fwd_hopper_varlen as RULE  # noqa: E402
from test_flash_hopper_compiles import SM90_MAX_SHARED, _expected_params, _ptx_params  # noqa: E402


def _candidates():
    out = []
    for causal, dtype in ((2, "bf16"), (0, "fp16"), (1, "fp16")):
        f = {"dtype": dtype, "BLOCK_DMODEL": 64, "CAUSAL_TYPE": causal}
        out += [(f, c) for c in RULE.tuning.all_configs(f, 90)]
    return out


@pytest.mark.parametrize("functional,config", _candidates(),
                         ids=lambda x: f"D{x['BLOCK_DMODEL']}c{x['CAUSAL_TYPE']}" if "BLOCK_DMODEL" in x else
                         f"n{x['BLOCK_N']}st{x['NUM_STAGES']}r{x['maxnreg']}")
def test_every_candidate_compiles_without_spills(functional, config):
    compiled = compile_kernel.compile_one(RULE, functional, config, 90)  # also checks the TMA metadata
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    if config["maxnreg"]:
        assert res["n_regs"] <= config["maxnreg"]
    assert int(compiled.metadata.shared) <= SM90_MAX_SHARED
    assert int(compiled.metadata.global_scratch_size) == 0, "host descriptors need no device scratch"
    assert _ptx_params(compiled.asm["ptx"]) == _expected_params(RULE)
    assert "cp.async.bulk.tensor.5d" in compiled.asm["ptx"]


def test_only_the_serial_schedule_is_offered():
    """The ping-pongs share a V stage between two partitions (fwd_hopper_varlen.py's module doc)."""
    for causal in (0, 1, 2):
        f = {"dtype": "fp16", "BLOCK_DMODEL": 64, "CAUSAL_TYPE": causal}
        configs = RULE.tuning.all_configs(f, 90)
        assert configs and all(c["SCHEDULE"] == 0 for c in configs)
        assert RULE.tuning.default(f, 90) in configs


@pytest.mark.parametrize("D", [64, 128])
def test_the_ping_pong_form_compiles_without_spills(D):
    """SCHEDULE 3 (not built by the rule yet; the JIT runs it): no spills, within shared memory, and the
    loader publishes the zeroed V rows as fwd_hopper_varlen._zero_rows_from says: fence.proxy.async, a
    warp barrier, then one lane's arrive."""
    import dataclasses
    import re

    rule = dataclasses.replace(RULE, functional={**RULE.functional, "BLOCK_DMODEL": [64, 128]})
    f = {"dtype": "bf16", "BLOCK_DMODEL": D, "CAUSAL_TYPE": 2}
    config = {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_STAGES": 3, "SCHEDULE": 3, "num_warps": 4, "maxnreg": 0,
              "RESCALE_TH": 0}
    compiled = compile_kernel.compile_one(rule, f, config, 90)
    res = resources(compiled.asm["cubin"])
    assert res["stack"] == 0 and res["local"] == 0, f"register spills: {res}"
    assert int(compiled.metadata.shared) <= SM90_MAX_SHARED
    ptx = compiled.asm["ptx"]
    # Nothing but comments, line info and labels between the three (one lane's arrive: predicated).
    filler = r"(?:\s*(?://[^\n]*|\.loc[^\n]*|\$L\w+:))*\s*"
    publish = re.search(r"fence\.proxy\.async\.shared::cta;" + filler + r"bar\.warp\.sync\s+-1;" + filler +
                        r"@%p\d+ mbarrier\.arrive\.shared::cta\.b64", ptx)
    assert publish, "the zeroed rows are not fenced and warp-synchronised right before the arrive"
