"""Tuner of the sm_90 Gluon MoE GEMMs (fused_moe_gemm_hopper for fp16/bf16,
fused_moe_gemm_hopper_fp8 for fp8, fused_moe_gemm_wq_hopper for int4 w4a16 decode): fills
tuning/sm_90/<rule>.json, keyed like their LUTs on (functional, bins of tokens per expert, N, K).

    python python/tune.py moe_gluon [--layers mixtral,deepseek] [--tokens 512,4096 (int4: 1,8,16,32,64)]
                                    [--quants bf16,fp8_tensor,fp8_block,int4] [--gemms 1,2] [--budget-s 220]
                                    [--retune] [--only KEY=V1,V2 ...]

Shapes, routing (random), operands and the float32 reference are the MoE GEMM
tuner's (python/tune_moe.GemmCase) at the align block size the kernel serves
(128; int4: 16, group 128 with zero points, GEMM2 split as fused_experts splits it, the activations
in the kernel's dot order as fused_experts gives them: the X_DOT_ORDER functional);
a (layer, M) whose operator block size differs is skipped (the Triton kernel serves it).
Every config of the rule's tuning space is launched through the JIT launcher
(python/jit/moe_gemm_hopper.py, int4: python/jit/moe_quant.py; the operator's descriptor and
arguments, bitwise the AOT kernel: test/gpu/test_moe_hopper*_gpu.py), checked
(outputs poisoned first) and timed by CUDA-graph replay at every M of the list that falls in the
entry's bin (two random routings where an expert may span two blocks, as tune_moe does); the entry
is the config with the best geometric mean over those runs. Entries are saved one
by one, so a stopped run resumes (unless --retune). --only narrows the space to the listed
values of a tuning key (repeatable; the rule's default config is always timed), e.g. for a short
device run: --only PREFETCH=0 --only GROUP_SIZE_M=16.
"""
from __future__ import annotations

import time

from python import tune_shared as T
from python.kernel_rules import config_name, functional_name
from python.rules_moe_hopper import BLOCK_M  # the align block size both Gluon kernels serve
from python.tune_moe import INT4_GROUP, LAYERS, QUANTS, TOL, entry_key, tokens_per_expert
from tritonsrc.moe import configs as C


def rule_for(quant, tokens_per_expert=0):
    """The Gluon rule that serves a tune_moe quant name at this many slots per expert (fp16/bf16:
    the persistent form from PERSISTENT_MIN_TOKENS_PER_EXPERT, as v2src/ops/moe_gemm_hopper.cc
    picks it); int4: the decode kernel (block size 16)."""
    if quant in ("int4", "int4_sym"):
        from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper
        return fused_moe_gemm_wq_hopper
    if QUANTS[quant][1] == C.QUANT_NONE:
        from python.rules_moe_hopper import (PERSISTENT_MIN_TOKENS_PER_EXPERT, fused_moe_gemm_hopper,
                                             fused_moe_gemm_hopper_persistent)
        return (fused_moe_gemm_hopper_persistent if tokens_per_expert >= PERSISTENT_MIN_TOKENS_PER_EXPERT
                else fused_moe_gemm_hopper)
    from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8
    return fused_moe_gemm_hopper_fp8


def int4_split_k(layer, gemm, M):
    """The split fused_experts gives an int4 decode GEMM (v2src/ops/moe_fused.cc split_k_for: GEMM2
    whose output tiles leave SMs idle and whose reduced dim is long)."""
    spec = LAYERS[layer]
    few_tiles = min(M * spec["topk"], spec["E"]) * -(-spec["K"] // C.SPLIT_K_TILE_N) < C.SPLIT_K_SMS
    return C.WQ_SPLIT_K if gemm == 2 and few_tiles and spec["N"] >= C.WQ_SPLIT_K * C.SPLIT_K_MIN_K else 1


def block_m_of(rule):
    return 16 if rule.name == "fused_moe_gemm_wq_hopper" else BLOCK_M


def gluon_entry(layer, gemm, M, quant):
    """(rule, functional, LUT bins) of one GEMM of a layer at M tokens, or None
    where the operator's block size is not the one the Gluon kernel serves."""
    spec = LAYERS[layer]
    rule = rule_for(quant, tokens_per_expert(layer, M))
    if C.block_size_m(M, topk=spec["topk"], num_experts=spec["E"]) != block_m_of(rule):
        return None
    act_name, q = QUANTS[quant]
    values = {"dtype": act_name, "QUANT": q, "MUL_ROUTED_WEIGHT": gemm == 2, "b_dtype": "u8", "BLOCK_SIZE_M": 16,
              "BLOCK_SIZE_K": 128, "SPLIT_K": int4_split_k(layer, gemm, M),  # int4: group 128
              "HAS_ZP": quant != "int4_sym",  # int4: the case's weights carry zero points unless int4_sym
              # int4: fused_experts' route on sm_90 (activations in the kernel's dot order, PAIR_BLOCKS in the space)
              "X_DOT_ORDER": True}
    f = {k: values[k] for k in rule.functional}  # the rule's order: the database's functional names
    _, bins = entry_key(layer, gemm, M, quant, block_m_of(rule))  # same bins: tokens per expert, N, K
    return rule, f, bins


def runner(case, quant, rule, functional=None):
    """run(config) for a GemmCase on the rule's JIT launcher (int4 with X_DOT_ORDER in `functional`:
    the case's activations copied into the kernel's dot order once, as fused_experts copies them)."""
    from python.jit.moe_gemm_hopper import (invoke_grouped_gemm_hopper, invoke_grouped_gemm_hopper_fp8,
                                            invoke_grouped_gemm_hopper_persistent)

    q = QUANTS[quant][1]
    if rule.name == "fused_moe_gemm_wq_hopper":
        from python.jit.moe_quant import dot_order_activations, invoke_grouped_gemm_wq_hopper, wq_hopper_block_k
        dot_order = bool((functional or {}).get("X_DOT_ORDER"))
        a = dot_order_activations(case.a, wq_hopper_block_k(INT4_GROUP)) if dot_order else case.a
        return lambda cfg: invoke_grouped_gemm_wq_hopper(a, case.b, case.c, case.weights, case.sorted,
                                                         case.expert_ids, case.ntpp, case.top_k, case.b_s,
                                                         case.b_zp, INT4_GROUP, cfg, mul_routed_weight=case.mul,
                                                         split_k=case.split_k, x_dot_order=dot_order)
    if rule.name == "fused_moe_gemm_hopper_persistent":
        return lambda cfg: invoke_grouped_gemm_hopper_persistent(case.a, case.b, case.c, case.weights, case.sorted,
                                                                 case.expert_ids, case.ntpp, case.top_k, cfg,
                                                                 mul_routed_weight=case.mul)
    if q == C.QUANT_NONE:
        return lambda cfg: invoke_grouped_gemm_hopper(case.a, case.b, case.c, case.weights, case.sorted,
                                                      case.expert_ids, case.ntpp, case.top_k, cfg,
                                                      mul_routed_weight=case.mul)
    return lambda cfg: invoke_grouped_gemm_hopper_fp8(case.a, case.b, case.c, case.a_s, case.b_s, case.weights,
                                                      case.sorted, case.expert_ids, case.ntpp, case.top_k, q, cfg,
                                                      mul_routed_weight=case.mul)


def parse_only(items):
    """["KEY=V1,V2", ...] -> {KEY: {V1, V2}} (integer values, as tuning configs hold them)."""
    only = {}
    for item in items or []:
        key, _, values = item.partition("=")
        if not key or not values:
            raise ValueError(f"--only takes KEY=V1,V2, not {item!r}")
        only.setdefault(key, set()).update(int(v) for v in values.split(","))
    return only


def restrict(configs, only, default):
    """The configs whose every key in `only` takes a listed value, with `default` first (always
    timed: the entry records how much the best beats it)."""
    unknown = set(only) - set(default)
    if unknown:
        raise ValueError(f"--only names keys the rule does not tune: {sorted(unknown)}")
    kept = [c for c in configs if all(c[k] in values for k, values in only.items())]
    return [default] + [c for c in kept if c != default]


def tokens_for(tokens, quant):
    """The Ms to tune a quant at: --tokens, or by default the prefill sizes the 16-bit and fp8 kernels
    serve (512, 4096) and the decode sizes the int4 kernel serves (1-64, blocks of 16)."""
    if tokens:
        return [int(m) for m in tokens.split(",")]
    return [1, 8, 16, 32, 64] if quant in ("int4", "int4_sym") else [512, 4096]


def gluon_groups(work):
    """{(rule name, functional name, bins): (rule, functional, [(layer, quant, M, gemm), ...])} for
    work of (layer, quant, M, gemm); a (layer, M) the Gluon kernels do not serve is left out. One
    database entry serves every M whose key it is, so it is tuned over all of them: Mixtral-like
    int4 M=32 and M=64 share tokens-per-expert bin 2, and tuned at M=32 alone the bin took the
    single-block form, which is 15% slower at M=64 (H100, 57bb263: 248 against 211 us)."""
    groups = {}
    for layer, quant, M, gemm in work:
        picked = gluon_entry(layer, gemm, M, quant)
        if picked is None:
            continue
        rule, f, bins = picked
        key = (rule.name, functional_name(f), tuple(bins))
        groups.setdefault(key, (rule, f, []))[2].append((layer, quant, M, gemm))
    return groups


def tune_moe_gluon(args, load_db, save_db, db_path):
    import torch

    from python.tune_moe import GemmCase, bin_entry, other_runs_text, routing_seeds

    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    work = [(layer, quant, M, gemm) for layer in args.layers.split(",") for quant in args.quants.split(",")
            for M in tokens_for(args.tokens, quant) for gemm in map(int, args.gemms.split(","))]
    groups = gluon_groups(work)
    served = {(it[0], it[1], it[2]) for _, _, items in groups.values() for it in items}
    skipped = sorted({(layer, quant, M) for layer, quant, M, _ in work} - served)
    if skipped:  # the Triton kernel's (python/tune.py moe), or no Gluon kernel for the quant
        print("not the Gluon kernels' (layer, quant, M): " + ", ".join(f"{layer} {q} {M}" for layer, q, M in skipped))
    dbs = {}
    start = time.time()
    print(f"Gluon MoE GEMM tuning on sm_{arch}: {len(groups)} entries ({len(work)} (layer, quant, M, GEMM)), "
          f"budget {args.budget_s:.0f} s")
    print("| layer | quant | M | GEMM | kernel | best config | ms | TF/s | default ms | x | candidates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for (_, fname, bins), (rule, f, items) in groups.items():
        if time.time() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: run the same command again to resume", flush=True)
            break
        if not rule.valid(f, arch):
            continue
        if rule.name not in dbs:
            dbs[rule.name] = load_db(rule.name, arch, rule)
            dbs[rule.name]["keys"] = [k.arg for k in rule.autotune_keys]
        db = dbs[rule.name]
        if not args.retune and any(e["functional"] == fname and e["bins"] == list(bins) for e in db["entries"]):
            continue
        default = dict(rule.tuning.default(f, arch))
        cands = restrict(rule.tuning.all_configs(f, arch), parse_only(args.only), default)
        layer, quant, _, gemm = items[0]
        per_case, runs, flops, shapes = [], [], [], []
        for M, seed in [(M, seed) for _, _, M, _ in items for seed in routing_seeds(layer, M, block_m_of(rule))]:
            case = GemmCase(layer, gemm, M, quant, block_m_of(rule), seed=seed, split_k=f.get("SPLIT_K", 1))
            run = runner(case, quant, rule, f)
            per_case.append(T.measure(cands, [None] * len(cands), lambda cfg: case.error(cfg, run),
                                      TOL[case.act_name], lambda cfg: T.kernel_ms(lambda: run(cfg), args.rep_ms)))
            runs.append((M, seed))
            flops.append(2 * M * case.shape["topk"] * case.shape["N"] * case.shape["K"])
            shapes.append(case.shape)
            del case, run
            torch.cuda.empty_cache()
        results = T.combine_cases(per_case)
        best, _, default_ms = T.best_second_default(results, default)
        Ms = ",".join(str(it[2]) for it in items)
        if best[0] == float("inf"):
            print(f"| {layer} | {quant} | {Ms} | {gemm} | {rule.name} | no valid config | | | | | {len(results)} |")
            continue
        entry = bin_entry(fname, bins, shapes[0], results, per_case, runs, default, flops[0])
        T.store_entry(db, entry, lambda: save_db(db, rule.name, arch), db_path(rule.name, arch), arch)
        print(f"| {layer} | {quant} | {Ms} | {gemm} | {rule.name} | {config_name(best[1])} | "
              f"{entry['time_ms']:.4f}{other_runs_text(entry)} | {entry['tflops']} | {default_ms:.4f} | "
              f"{default_ms / best[0]:.2f} | {len(results)} |", flush=True)
    print(f"done in {time.time() - start:.0f} s", flush=True)


def add_arguments(ap):
    ap.add_argument("--layers", default="mixtral,deepseek")
    ap.add_argument("--tokens", default="", help="Ms (default: 512,4096; int4: 1,8,16,32,64)")
    ap.add_argument("--quants", default="bf16,fp8_tensor,fp8_block")
    ap.add_argument("--gemms", default="1,2")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new entries after this")
    ap.add_argument("--rep-ms", type=int, default=25)
    ap.add_argument("--retune", action="store_true", help="tune listed entries again, replacing theirs")
    ap.add_argument("--only", action="append", metavar="KEY=V1,V2",
                    help="time only configs whose KEY is one of the values (repeatable)")
    return ap
