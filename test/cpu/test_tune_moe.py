"""The MoE GEMM tuner's pure parts (candidate spaces, key bins) and the
generator's use of a fused_moe_gemm database keyed on (tokens per expert, N, K)."""
import pytest

from python import build_plan, rules, tune_moe
from python.kernel_rules import config_name, functional_name
from tritonsrc.moe import configs as C

RULE = next(k for k in rules.KERNELS if k.name == "fused_moe_gemm")


def functional(block_m, quant=C.QUANT_NONE, dtype="bf16"):
    return dict(ab_dtype="fp8e4nv" if quant else dtype, c_dtype=dtype, QUANT=quant, MUL_ROUTED_WEIGHT=False,
                ALIGNED=True, BLOCK_SIZE_M=block_m, SPLIT_K=1, ALIGNED16=True)


def test_quick_space_is_a_small_subset_of_the_rule_space():
    for quant in (C.QUANT_NONE, C.QUANT_FP8_TENSOR, C.QUANT_FP8_BLOCK):
        for bm in C.BLOCK_SIZES_M:
            f = functional(bm, quant)
            space = RULE.tuning.all_configs(f, 90)
            quick = tune_moe.quick_space(space, bm)
            assert 4 <= len(quick) <= 24, (quant, bm, len(quick))
            assert all(c in space for c in quick)
            if bm >= 64:  # prefill: wide wgmma tiles, both warp counts
                assert {c["BLOCK_SIZE_N"] for c in quick} == {128, 256}
                assert {c["num_warps"] for c in quick} == {4, 8}
            else:  # decode at a few slots per expert: no expert spans two blocks, no grouping
                assert {c["GROUP_SIZE_M"] for c in quick} == {1}


def test_quick_space_groups_decode_blocks_where_an_expert_may_span_several():
    # Mixtral-like M=64, top-2 of 8: 16 slots per expert on average, 10-12 blocks of 16 for 8 experts.
    for quant in (C.QUANT_NONE, C.QUANT_FP8_TENSOR, C.QUANT_FP8_BLOCK):
        space = RULE.tuning.all_configs(functional(16, quant), 90)
        few, many = tune_moe.quick_space(space, 16, tokens_per_expert=8), tune_moe.quick_space(space, 16,
                                                                                              tokens_per_expert=16)
        assert {c["GROUP_SIZE_M"] for c in many} == {1, 16}
        assert len(many) == 2 * len(few) and all(c in many for c in few)


def test_rule_space_covers_hopper_prefill_and_decode_tiles():
    space = RULE.tuning.all_configs(functional(128), 90)
    assert any(c["BLOCK_SIZE_N"] == 256 and c["BLOCK_SIZE_K"] == 64 and c["num_stages"] == 4 for c in space)
    assert any(c["BLOCK_SIZE_N"] == 128 and c["BLOCK_SIZE_K"] == 128 and c["num_warps"] == 8 for c in space)
    assert all(tune_moe_smem(c, 128) <= 227 * 1024 for c in space)
    decode = RULE.tuning.all_configs(functional(16), 90)
    assert any(c["BLOCK_SIZE_N"] == 32 and c["num_stages"] == 5 for c in decode)


def tune_moe_smem(c, bm, elem=2):
    return c["num_stages"] * elem * c["BLOCK_SIZE_K"] * (bm + c["BLOCK_SIZE_N"])


def test_layer_gemms_fall_in_distinct_bins():
    """Each (layer, GEMM, M) the quick tuning run covers gets its own LUT cell."""
    cells = set()
    for layer, spec in tune_moe.LAYERS.items():
        for gemm, (n, k) in ((1, (2 * spec["N"], spec["K"])), (2, (spec["K"], spec["N"]))):
            for M in (1, 64, 512, 4096):
                tpe = -(-M * spec["topk"] // spec["E"])
                cell = (tune_moe.bin_of(tpe, C.TOKENS_PER_EXPERT_BINS), tune_moe.bin_of(n, C.GEMM_NK_BINS),
                        tune_moe.bin_of(k, C.GEMM_NK_BINS))
                assert cell not in cells, (layer, gemm, M, cell)
                cells.add(cell)


def test_database_entry_lands_in_its_lut_cell(monkeypatch):
    f = functional(128)
    cfg = dict(BLOCK_SIZE_N=256, BLOCK_SIZE_K=64, GROUP_SIZE_M=16, num_warps=8, num_stages=4)
    assert cfg in RULE.tuning.all_configs(f, 90)
    bins = [5, 4, 2]  # Mixtral GEMM1 at 4096 tokens: 1024 slots per expert, N = 28672, K = 4096
    entry = {"functional": functional_name(f), "bins": bins, "config": cfg}
    monkeypatch.setattr(build_plan, "load_tuning_db",
                        lambda kernel, arch: [entry] if kernel == "fused_moe_gemm" and arch == 90 else [])
    plan = build_plan.make_plan(rules, "release", [90])
    pk = next(k for k in plan["kernels"] if k["name"] == "fused_moe_gemm")
    v = next(e for e in pk["entries"] if e["name"] == functional_name(f))["variants"][0]
    shape = [len(k.bins) for k in RULE.autotune_keys]
    assert shape == [len(C.TOKENS_PER_EXPERT_BINS), len(C.GEMM_NK_BINS), len(C.GEMM_NK_BINS)]
    idx = (bins[0] * shape[1] + bins[1]) * shape[2] + bins[2]
    names = [c["name"] for c in v["configs"]]
    assert names[v["lut"][idx]] == config_name(cfg)
    default = config_name(dict(RULE.tuning.default(f, 90)))
    assert all(names[j] == default for i, j in enumerate(v["lut"]) if i != idx)


def test_aot_form_compiles_the_build_kernel_in_a_worker():
    """The tuner's compile workers build the build's own cubin for an entry's
    functional (what it then times); a config the kernel cannot take comes
    back as a one-line error, not an exception."""
    from python import tune_shared as T
    wq = next(k for k in rules.KERNELS if k.name == "fused_moe_gemm_wq")
    f, _ = tune_moe.entry_key("mixtral", 2, 1, "int4", 16)
    cfg = tune_moe.quick_space(wq.tuning.all_configs(f, 90), 16, "int4")[0]
    assert T.warm(T.aot_compile_job(wq.name, f, cfg, 90)) is None
    err = T.warm(T.aot_compile_job(wq.name, f, dict(cfg, BLOCK_SIZE_K=96), 90))
    assert err and "\n" not in err


def test_aot_arguments_follow_the_kernel_parameters():
    """aot_launch passes every parameter in the kernel's order: runtime ones
    from the prepared launch, constexprs from its keyword arguments."""
    import torch

    from python.jit.moe_quant import grouped_gemm_wq_launch
    from python.jit_launch import aot_arguments, kernel_function
    wq = next(k for k in rules.KERNELS if k.name == "fused_moe_gemm_wq")
    E, N, K, M = 2, 64, 128, 3
    a = torch.randn(M, K, dtype=torch.float16)
    b = torch.randint(0, 255, (E, N, K // 2), dtype=torch.uint8)
    c = torch.empty(M, N, dtype=torch.float16)
    s = torch.rand(E, N, K // 64)
    ids = torch.zeros(16, dtype=torch.int32)
    cfg = dict(BLOCK_SIZE_M=16, BLOCK_SIZE_N=32, BLOCK_SIZE_K=128, GROUP_SIZE_M=1, num_warps=4, num_stages=3,
               INT4_DOT=4)
    grid, args, kwargs = grouped_gemm_wq_launch(a, b, c, None, ids, ids[:1], ids[:1], 1, dict(cfg), 4, s,
                                                group_size=64)
    full = aot_arguments(wq, args, kwargs)
    names = kernel_function(wq).arg_names
    assert len(full) == len(names)
    assert full[names.index("a_ptr")] is a and full[names.index("K")] == K
    assert full[names.index("INT4_DOT")] == 4 and full[names.index("BLOCK_SIZE_N")] == 32
    assert full[names.index("group_size")] == 64 and full[names.index("has_zp")] == 0


def test_candidate_jobs_follow_the_timed_form(monkeypatch):
    """The compile workers build the form the tuner then times: the build's
    cubin in the AOT form, the JIT's specialization otherwise."""
    from python import tune_shared as T
    f, _ = tune_moe.entry_key("mixtral", 1, 1, "bf16", 16)
    cfgs = [dict(BLOCK_SIZE_N=64, BLOCK_SIZE_K=64, GROUP_SIZE_M=1, num_warps=4, num_stages=3)]
    monkeypatch.setenv("AOTRITON_JIT_AOT_FORM", "1")
    assert T.candidate_jobs(RULE.name, f, 90, cfgs, "m:k", None) == [("aot", RULE.name, f, cfgs[0], 90)]
    monkeypatch.setenv("AOTRITON_JIT_AOT_FORM", "0")
    jobs = T.candidate_jobs(RULE.name, f, 90, cfgs, "m:k", lambda c: ((1, 1, 1), [3], dict(c)))
    assert jobs == [("m:k", (1, 1, 1), [3], cfgs[0])]


def test_gluon_tuner_keys_entries_as_the_generator_names_them():
    """python/tune_moe_gluon.py: the sm_90 Gluon GEMMs are tuned where the operator's
    block size is their 128, under the functional names and LUT bins their rules use."""
    from python import tune_moe_gluon as G
    from python.rules_moe_hopper import fused_moe_gemm_hopper
    from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8

    rule, f, bins = G.gluon_entry("mixtral", 2, 4096, "fp8_block")
    assert rule is fused_moe_gemm_hopper_fp8
    assert functional_name(f) == "dtype-bf16__QUANT-2__MUL_ROUTED_WEIGHT-1"
    assert list(f) == list(rule.functional) and bins == tune_moe.entry_key("mixtral", 2, 4096, "fp8_block", 128)[1]
    rule, f, _ = G.gluon_entry("deepseek", 1, 4096, "bf16")
    assert rule is fused_moe_gemm_hopper and functional_name(f) == "dtype-bf16__MUL_ROUTED_WEIGHT-0"
    # 1024 slots per expert: the persistent form the operator runs there (opted in).
    from python.rules_moe_hopper import fused_moe_gemm_hopper_persistent
    assert G.gluon_entry("mixtral", 1, 4096, "bf16")[0] is fused_moe_gemm_hopper_persistent
    assert G.gluon_entry("mixtral", 1, 512, "bf16")[0] is fused_moe_gemm_hopper  # 128 per expert
    assert G.gluon_entry("mixtral", 1, 64, "fp8_tensor") is None  # block size 16: the Triton kernel's
    assert G.gluon_entry("mixtral", 1, 4096, "int4") is None  # a prefill block size: the Triton kernel's
    # int4 decode (block size 16): the sm_90 int4 GEMM on fused_experts' route (activations in its dot
    # order), GEMM2 at M=1 split as fused_experts splits it.
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper
    rule, f, bins = G.gluon_entry("mixtral", 2, 1, "int4")
    assert rule is fused_moe_gemm_wq_hopper and list(f) == list(rule.functional)
    assert functional_name(f) == ("dtype-bf16__b_dtype-u8__MUL_ROUTED_WEIGHT-1__BLOCK_SIZE_M-16__BLOCK_SIZE_K-128__"
                                  "SPLIT_K-4__HAS_ZP-1__X_DOT_ORDER-1")
    assert bins == tune_moe.entry_key("mixtral", 2, 1, "int4", 16)[1]
    assert G.gluon_entry("mixtral", 2, 64, "int4")[1]["SPLIT_K"] == 1
    # int4_sym: the same kernel's functional without zero points, the same bins.
    rule_s, f_s, bins_s = G.gluon_entry("mixtral", 2, 1, "int4_sym")
    assert rule_s is rule and f_s == dict(f, HAS_ZP=False) and bins_s == bins
    space = rule.tuning.all_configs(f, 90)
    assert rule.tuning.default(f, 90) in space
    assert {(c["PAIR_BLOCKS"], c["maxnreg"]) for c in space} == {(0, 0), (1, 0), (1, 128)}  # the pair forms
    for quant in ("bf16", "fp8_tensor", "fp8_block"):
        rule, f, _ = G.gluon_entry("mixtral", 1, 4096, quant)
        space = rule.tuning.all_configs(f, 90)
        assert space and rule.tuning.default(f, 90) in space


def test_one_entry_is_tuned_over_every_M_of_its_bin():
    """DeepSeek-like M=1..32 share tokens-per-expert bin 1 (8 to ~160 experts touched): one
    entry, tuned over all four; M=64 is the next bin. The fp8 decode GEMM2 the operator splits
    (Mixtral-like M=1) is keyed, and tuned, on its SPLIT_K functional."""
    work = [(layer, "fp8_tensor", M, 16, gemm) for layer in ("deepseek", "mixtral") for M in (1, 8, 16, 32, 64)
            for gemm in (1, 2)]
    groups = tune_moe.entry_groups(work, {"fp8_tensor": RULE.name})
    deepseek = {k: [it[2] for it in v] for k, v in groups.items() if v[0][0] == "deepseek"}
    assert sorted(deepseek.values()) == [[1, 8, 16, 32], [1, 8, 16, 32], [64], [64]]
    split = [(k, v) for k, v in groups.items() if "SPLIT_K-4" in k[1]]
    assert [(v[0][0], [it[2] for it in v], v[0][4]) for _, v in split] == [("mixtral", [1], 2)]
    for items in groups.values():  # every key is a functional the rule builds
        layer, quant, M, bm, gemm, split = items[0]
        assert RULE.valid(tune_moe.entry_key(layer, gemm, M, quant, bm, split)[0], 90)


def test_operator_split_k_follows_the_operator_rule():
    """v2src/ops/moe_fused.cc split_k_for: quantized GEMM2, 16-row blocks, fewer output tiles
    (experts touched x cdiv(K, 64)) than 132 SMs, intermediate N >= 4 x 1024."""
    s = tune_moe.operator_split_k
    assert s("mixtral", 2, 1, "fp8_tensor", 16) == C.GEMM_SPLIT_K == 4  # 2 x 64 tiles
    assert s("mixtral", 2, 1, "fp8_block", 16) == 4
    assert s("mixtral", 2, 2, "fp8_tensor", 16) == 1  # 4 experts x 64 tiles
    assert s("mixtral", 1, 1, "fp8_tensor", 16) == 1  # GEMM1 is never split
    assert s("mixtral", 2, 1, "bf16", 16) == 1  # unquantized: 0.94 of the roofline unsplit
    assert s("deepseek", 2, 1, "fp8_tensor", 16) == 1  # 8 x 112 tiles, N 2048


def test_combine_cases_ranks_by_the_geometric_mean_and_fails_a_config_that_failed_once():
    from python import tune_shared as T
    a, b, c = {"n": 1}, {"n": 2}, {"n": 3}
    inf = float("inf")
    case1 = [(1.0, a, "ok"), (2.0, b, "ok"), (inf, c, "wrong: rel err 1e0")]
    case2 = [(1.5, b, "ok"), (3.0, c, "ok"), (4.0, a, "ok")]
    out = T.combine_cases([case1, case2])
    assert [r[1] for r in out] == [b, a, c]  # b: sqrt(3) < a: 2
    assert abs(out[0][0] - 3 ** 0.5) < 1e-12 and abs(out[1][0] - 2.0) < 1e-12
    assert out[2][0] == inf and out[2][2].startswith("wrong")


def test_two_routings_where_an_expert_may_span_blocks():
    """Mixtral-like M=64 (16 slots per expert on average, blocks of 16): two random
    routings; M=32 (8 per expert) and DeepSeek-like decode: one."""
    assert tune_moe.routing_seeds("mixtral", 64, 16) == (0, 1)
    assert tune_moe.routing_seeds("mixtral", 32, 16) == (0, )
    assert tune_moe.routing_seeds("deepseek", 64, 16) == (0, )
    assert tune_moe.routing_seeds("mixtral", 4096, 128) == (0, 1)


def test_triton_tuner_sends_int4_sym_to_the_gluon_tuner():
    """fused_moe_gemm_wq's functional does not tell symmetric int4 from int4 with zero points: the
    Triton tuner refuses int4_sym (before touching a GPU) and names the tuner that takes it."""
    import argparse

    pytest.importorskip("torch")
    with pytest.raises(SystemExit, match="moe_gluon --quants int4_sym"):
        tune_moe.tune_moe(argparse.Namespace(quants="int4,int4_sym"), RULE, None, None, None)


def test_gluon_tuner_only_narrows_the_space_and_keeps_the_default():
    """tune.py moe_gluon --only KEY=V1,V2: configs outside the listed values are not timed, the
    rule's default always is (first), and a key the rule does not tune or a malformed item is an
    error rather than an empty or unfiltered run."""
    from python import tune_moe_gluon as G
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    _, f, _ = G.gluon_entry("mixtral", 1, 1, "int4")
    f = dict(f, X_DOT_ORDER=False)  # the permuting form: LOAD_DISTANCE 1 is in its space
    space, default = rule.tuning.all_configs(f, 90), rule.tuning.default(f, 90)
    only = G.parse_only(["LOAD_DISTANCE=1", "GROUP_SIZE_M=16", "NUM_STAGES=4,8"])
    assert only == {"LOAD_DISTANCE": {1}, "GROUP_SIZE_M": {16}, "NUM_STAGES": {4, 8}}
    kept = G.restrict(space, only, default)
    # The default stays though LOAD_DISTANCE=1 is asked.
    assert kept[0] == default and default["LOAD_DISTANCE"] == 2

    def asked(c):
        return c["LOAD_DISTANCE"] == 1 and c["GROUP_SIZE_M"] == 16 and c["NUM_STAGES"] in (4, 8)

    assert all(asked(c) for c in kept[1:]) and len(kept) > 2
    assert {c["NUM_STAGES"] for c in kept[1:]} == {4, 8}  # both listed values
    assert len(kept) - 1 == sum(asked(c) for c in space)
    assert G.restrict(space, {}, default) == [default] + [c for c in space if c != default]
    with pytest.raises(ValueError, match="LOAD_DISTANCES"):
        G.restrict(space, {"LOAD_DISTANCES": {1}}, default)
    with pytest.raises(ValueError, match="KEY=V1,V2"):
        G.parse_only(["LOAD_DISTANCE"])


def test_gluon_tuner_gives_int4_its_activations_in_dot_order(monkeypatch):
    """The int4 runner launches the X_DOT_ORDER functional with the case's activations copied into
    the kernel's dot order once (as fused_experts copies them), and the plain ones otherwise."""
    import types

    import torch

    from python import tune_moe_gluon as G
    from python.jit import moe_quant
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule

    calls = []
    monkeypatch.setattr(moe_quant, "invoke_grouped_gemm_wq_hopper",
                        lambda a, *args, **kw: calls.append((a, kw["x_dot_order"])))
    a = torch.randn(3, 256).to(torch.bfloat16)
    case = types.SimpleNamespace(a=a, b=None, c=None, weights=None, sorted=None, expert_ids=None, ntpp=None,
                                 top_k=2, b_s=None, b_zp=None, mul=False, split_k=1)
    _, f, _ = G.gluon_entry("mixtral", 1, 1, "int4")
    G.runner(case, "int4", rule, f)({})
    G.runner(case, "int4", rule, dict(f, X_DOT_ORDER=False))({})
    (ordered, on), (plain, off) = calls
    assert on and not off and plain is a
    assert torch.equal(ordered, moe_quant.dot_order_activations(a, 128)) and not torch.equal(ordered, a)


def test_gluon_tuner_groups_every_M_of_a_bin_into_one_entry():
    """Mixtral-like int4 decode: tokens per expert 1 (M=1), 2-4 (M=8, 16) and 8-16 (M=32, 64) are
    three bins of the int4 GEMM's database; each GEMM's entry is tuned over all of its bin's Ms.
    bf16 at M=64 (block size 16) is the Triton kernel's and gets no group."""
    from python import tune_moe_gluon as G

    work = [("mixtral", q, M, gemm) for q in ("int4", "bf16") for M in (1, 8, 16, 32, 64) for gemm in (1, 2)]
    groups = G.gluon_groups(work)
    assert all(rule.name == "fused_moe_gemm_wq_hopper" for rule, _, _ in groups.values())
    per_gemm = sorted((items[0][3], [it[2] for it in items]) for _, _, items in groups.values())
    assert per_gemm == [(1, [1]), (1, [8, 16]), (1, [32, 64]), (2, [1]), (2, [8, 16]), (2, [32, 64])]
    for (name, fname, bins), (rule, f, items) in groups.items():
        assert fname == G.functional_name(f) and rule.valid(f, 90)
        assert all(list(bins) == G.gluon_entry(l, g, M, q)[2] for l, q, M, g in items)


def test_gluon_tuner_picks_over_every_run_of_the_bin(monkeypatch, tmp_path):
    """The loop times each candidate at every (M, routing seed) of the bin and stores the config with
    the best geometric mean: here the single-block default wins M=32 by 1% and loses M=64 by 15%, so
    the pair form is the entry, with every run's time recorded. Run on fake cases and clocks."""
    import argparse

    torch = pytest.importorskip("torch")
    from python import tune_moe_gluon as G
    from python import tune_shared as T

    _, f, _ = G.gluon_entry("mixtral", 1, 32, "int4")
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule
    default = dict(rule.tuning.default(f, 90))
    single = dict(default, PAIR_BLOCKS=0, maxnreg=0)
    monkeypatch.setattr(rule.tuning, "all_configs", lambda f, arch: [single, default])
    monkeypatch.setattr(rule.tuning, "default", lambda f, arch: single)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    class FakeCase:
        def __init__(self, layer, gemm, M, quant, block_m, seed=0, split_k=1):
            self.M, self.seed, self.act_name = M, seed, "bf16"
            self.shape = dict(layer=layer, gemm=gemm, M=M, E=8, topk=2, N=28672, K=4096)

        def error(self, cfg, run):
            return 0.0

    from python import tune_moe
    monkeypatch.setattr(tune_moe, "GemmCase", FakeCase)
    timed = []
    monkeypatch.setattr(G, "runner", lambda case, quant, rule, f: lambda cfg: (case.M, case.seed, cfg["PAIR_BLOCKS"]))

    def fake_ms(fn, rep_ms):
        M, seed, pair = fn()
        timed.append((M, seed, pair))
        return {32: (0.188, 0.190), 64: (0.248, 0.211)}[M][pair]

    monkeypatch.setattr(T, "kernel_ms", fake_ms)
    saved = {}
    monkeypatch.delenv("OUT", raising=False)
    args = argparse.Namespace(layers="mixtral", quants="int4", tokens="32,64", gemms="1", budget_s=1e9, rep_ms=1,
                              retune=False, only=None)
    G.tune_moe_gluon(args, lambda name, arch, rule: {"entries": []},
                     lambda db, name, arch: saved.update({name: db}), lambda name, arch: tmp_path / "db.json")
    (entry,) = saved["fused_moe_gemm_wq_hopper"]["entries"]
    assert entry["config"]["PAIR_BLOCKS"] == 1
    assert sorted(set(timed)) == [(M, seed, pair) for M, seed in ((32, 0), (64, 0), (64, 1)) for pair in (0, 1)]
    assert [(t["M"], t["seed"], t["time_ms"], t["default_ms"]) for t in entry["tuned_over"]] == [
        (32, 0, 0.19, 0.188), (64, 0, 0.211, 0.248), (64, 1, 0.211, 0.248)]
    assert entry["time_ms"] == 0.19 and entry["default_ms"] == 0.188 and entry["bins"] == [2, 4, 2]


def test_gluon_tuner_default_tokens_follow_the_kernel_that_serves_them():
    """Without --tokens, int4 is tuned at the decode sizes its kernel serves and the rest at prefill
    sizes: `tune.py moe_gluon --quants int4` with the old default (512,4096) tuned nothing."""
    from python import tune_moe_gluon as G

    assert G.tokens_for("", "int4") == G.tokens_for("", "int4_sym") == [1, 8, 16, 32, 64]
    assert G.tokens_for("", "fp8_block") == [512, 4096]
    assert G.tokens_for("64,4096", "int4") == [64, 4096]
    for quant in ("int4", "bf16", "fp8_block"):
        work = [("mixtral", quant, M, 1) for M in G.tokens_for("", quant)]
        served = sorted(it[2] for _, _, items in G.gluon_groups(work).values() for it in items)
        assert served == G.tokens_for("", quant), quant  # every default M has a Gluon entry
