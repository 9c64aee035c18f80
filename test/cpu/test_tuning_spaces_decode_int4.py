"""The decode tuning space and the tuner's shape family (no GPU needed)."""


from python import rules, tune_decode  # noqa: E402
from tritonsrc.flash import decode_configs as DC  # noqa: E402

RULE = next(r for r in rules.KERNELS if r.name == "attn_decode")


def test_default_config_is_in_the_space_and_pipelined():
    for d in DC.DECODE_HEAD_BUCKETS:
        f = {"dtype": "bf16", "BLOCK_DMODEL": d, "PAGED": True, "SCORE_MOD": 0}
        space = RULE.tuning.all_configs(f, 90)
        default = RULE.tuning.default(f, 90)
        assert default in space
        assert default["num_stages"] >= 3  # two K/V tiles in flight (Triton keeps num_stages - 1 buffers)
        assert default["BLOCK_N"] * d * 2 == 16384  # a 16 KB K tile


def test_space_respects_shared_memory():
    for arch, limit in ((90, 227 * 1024), (80, 163 * 1024)):
        for d in DC.DECODE_HEAD_BUCKETS:
            f = {"dtype": "fp16", "BLOCK_DMODEL": d, "PAGED": False, "SCORE_MOD": 0}
            for c in RULE.tuning.all_configs(f, arch):
                if c == RULE.tuning.default(f, arch):
                    continue
                smem = (c["num_stages"] - 1) * 4 * c["BLOCK_N"] * d + 2 * c["BLOCK_M"] * d
                assert smem <= limit, (arch, d, c)


def test_tuner_shapes_cover_every_bin():
    """Batch 1, 8, 64 at 32k tokens (the tuner's defaults) give one entry per
    keys-per-split bin, under the operator's split rule on an H200 (132 SMs)."""
    bins = RULE.autotune_keys[0].bins
    got = []
    for B in (1, 8, 64):
        splits = DC.choose_splits(B, 1, 32, 4, 32768, 132)
        got.append(tune_decode.bin_of(-(-32768 // splits), bins))
    assert got == [0, 1, 2]


def test_quick_space_keeps_the_default_and_one_query_tile():
    f = {"dtype": "bf16", "BLOCK_DMODEL": 128, "PAGED": True, "SCORE_MOD": 0}
    quick = tune_decode.quick_space(RULE.tuning.all_configs(f, 90), rows=8)
    assert RULE.tuning.default(f, 90) in quick
    assert all(c["BLOCK_M"] == 16 and c["BLOCK_N"] >= 32 for c in quick)
    assert 12 <= len(quick) <= 32  # the device run compiles and times each of them


def _planned_lut(rule, f, entry):
    """Config names the build plan puts in the LUT of functional f for a database of one entry."""
    from python import build_plan
    notes = []
    v = build_plan._plan_variant(rule, f, 90, rules.PROFILES["release"], [entry], notes)
    assert not notes, notes
    return [v["configs"][i]["name"] for i in v["lut"]]


def test_decode_entry_reaches_the_lut():
    f = {"dtype": "bf16", "BLOCK_DMODEL": 128, "PAGED": True, "SCORE_MOD": 0}
    cfg = next(c for c in tune_decode.quick_space(RULE.tuning.all_configs(f, 90), 8)
               if c != RULE.tuning.default(f, 90))
    from python.kernel_rules import config_name, functional_name
    lut = _planned_lut(RULE, f, {"functional": functional_name(f), "bins": [2], "config": cfg})
    assert lut[2] == config_name(cfg) and lut[0] == config_name(RULE.tuning.default(f, 90))


def test_int4_tuner_entries_reach_the_wq_lut():
    """tune.py moe --quants int4 keys its entries like fused_moe_gemm_wq's LUT."""
    from python import tune_moe
    from python.kernel_rules import config_name, functional_name
    wq = next(r for r in rules.KERNELS if r.name == "fused_moe_gemm_wq")
    f, bins = tune_moe.entry_key("mixtral", 2, 1, "int4", 16)
    assert f in wq.functionals(90)
    quick = tune_moe.quick_space(wq.tuning.all_configs(f, 90), 16, "int4")
    assert quick and all(c["BLOCK_SIZE_K"] in (128, 256) for c in quick)
    assert {c["INT4_DOT"] for c in quick} == {0, 3, 4}  # per nibble vs PRMT (row sums or not) compete on the device
    cfg = quick[-1]
    lut = _planned_lut(wq, f, {"functional": functional_name(f), "bins": bins, "config": cfg})
    idx = (bins[0] * 5 + bins[1]) * 5 + bins[2]
    assert lut[idx] == config_name(cfg)
