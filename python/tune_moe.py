"""MoE grouped-GEMM tuner: fills tuning/sm_<arch>/fused_moe_gemm.json, keyed
like the rule's LUT on (functional, bins of tokens per expert, N, K).

    python python/tune.py moe [--layers mixtral,deepseek] [--tokens 1,64,512,4096]
                              [--quants bf16,fp16,fp8_tensor,fp8_block,int4] [--gemms 1,2]
                              [--space quick|all] [--block-sizes auto|all] [--budget-s 220] [--jobs 16]
                              [--retune]

For each (layer, GEMM, M, quant) the GEMM runs on the operator's own inputs:
random routing, moe_align with the block size fused_experts picks for M
(BLOCK_SIZE_M is a functional: `--block-sizes all` also tunes the other
functionals, reachable with an explicit block_size), fp8 activations
quantized as the operator does. Every candidate config of the rule's tuning
space (`--space quick`: a pruned subset per regime, see quick_space) is
compiled ahead in parallel worker processes (compile_kernel.compile_one: the
cubin the build ships for the entry's functional, launched with the build's
argument list, jit_launch.aot_form, on by default in tune.py; with
AOTRITON_JIT_AOT_FORM=0 the JIT's own specialization through
fused_moe_kernel.warmup), checked against a float32 torch reference of the same
quantized operands, then timed (CUDA-graph replay: tune_shared.kernel_ms). Entries are
saved after each one, so a stopped run (or one that hit --budget-s) resumes
where it stopped; with $OUT set the database is also copied there.
`--quants int4` tunes the weight-only int4 w4a16 GEMM (rule fused_moe_gemm_wq,
its own database; group 128 with zero points, random packed weights, checked
against the float32 product of the dequantized weights).
generate.py compiles the winners into the release LUT; shapes without an
entry keep the heuristic default (tritonsrc/moe/configs.py).
"""
from __future__ import annotations

import os
import time

from python import tune_shared as T
from python.kernel_rules import config_name, functional_name
from tritonsrc.moe import configs as C

LAYERS = {
    "mixtral": dict(E=8, topk=2, K=4096, N=14336),
    "deepseek": dict(E=256, topk=8, K=7168, N=2048),
}
INT4 = "int4"  # w4a16 (fused_moe_gemm_wq), not a QUANT value of fused_moe_gemm
# quant name -> (activation / output dtype, QUANT)
QUANTS = {"bf16": ("bf16", C.QUANT_NONE), "fp16": ("fp16", C.QUANT_NONE),
          "fp8_tensor": ("bf16", C.QUANT_FP8_TENSOR), "fp8_block": ("bf16", C.QUANT_FP8_BLOCK),
          "fp8_channel": ("bf16", C.QUANT_FP8_CHANNEL), "int4": ("bf16", INT4),
          # int4 without zero points (symmetric checkpoints): the sm_90 int4 GEMM's HAS_ZP=0 functional
          # (tune_moe_gluon only: the Triton kernel's functional does not tell the two apart).
          "int4_sym": ("bf16", INT4)}
TOL = {"fp16": 5e-3, "bf16": 1e-2}  # rel. Frobenius error vs float32 on the same (quantized) operands
INT4_GROUP = 128  # int4 w4a16 entries: group 128 with zero points (bench/moe_coverage_quant.py's layer)
WQ_RULE = "fused_moe_gemm_wq"  # int4 entries go to this rule's database
# What the compile workers warm up, per rule.
KERNELS = {"fused_moe_gemm": "tritonsrc.moe.grouped_gemm:fused_moe_kernel",
           WQ_RULE: "tritonsrc.moe.grouped_gemm_wq:fused_moe_wq_kernel"}
bin_of = T.bin_of


def quick_space(configs, block_m, quant="bf16", tokens_per_expert=0):
    """A regime's plausible configs: decode (BLOCK_SIZE_M 16/32) splits N into
    narrow tiles with deep K pipelines, grouping 16 M blocks only where an
    expert may get several (more than half a block of slots per expert on
    average: random routing then overflows a block); prefill uses wide wgmma tiles. int4
    decode: K tiles of 128/256 (64-128 contiguous bytes per weight row), the
    per-nibble dequantization against the PRMT ones (INT4_DOT 0, 3 and 4; 1
    never won on the H200 and 2 is 4 without inline PTX), 3-4 stages; wide N tiles amortize the
    per-sub-block work (scales, zero points, row sums) over more weights."""
    if quant == INT4 and block_m <= 32:
        keep = lambda c: (c["BLOCK_SIZE_K"] in (128, 256) and c["num_stages"] in (3, 4)  # noqa: E731
                          and (c["num_warps"] in (2, 4) or c["BLOCK_SIZE_N"] >= 128) and c["INT4_DOT"] in (0, 3, 4))
    elif block_m <= 32:
        groups = (1, 16) if 2 * tokens_per_expert > block_m else (1, )
        keep = lambda c: (c["BLOCK_SIZE_N"] in (32, 64, 128) and c["num_stages"] in (3, 5)  # noqa: E731
                          and c["GROUP_SIZE_M"] in groups)
    else:
        group = 8 if block_m == 64 else 16
        keep = lambda c: (c["BLOCK_SIZE_N"] in (128, 256) and c["BLOCK_SIZE_K"] in (64, 128)  # noqa: E731
                          and c["GROUP_SIZE_M"] == group and c["num_stages"] >= 3)
    return [c for c in configs if keep(c)]


def tokens_per_expert(layer, M):
    """Slots per expert on average, cdiv(M * top_k, E): the database's first key."""
    spec = LAYERS[layer]
    return -(-M * spec["topk"] // spec["E"])


def operator_split_k(layer, gemm, M, quant, block_m):
    """The split-K fused_experts gives this GEMM (v2src/ops/moe_fused.cc split_k_for, on the same
    generated constants: quantized decode GEMM2 whose output tiles leave SMs idle and whose reduced
    dim is long; every layer here is aligned and multiplies the routed weight in GEMM2)."""
    spec = LAYERS[layer]
    q = QUANTS[quant][1]
    few_tiles = min(M * spec["topk"], spec["E"]) * -(-spec["K"] // C.SPLIT_K_TILE_N) < C.SPLIT_K_SMS
    return (C.GEMM_SPLIT_K if gemm == 2 and q not in (C.QUANT_NONE, INT4) and block_m == 16 and few_tiles
            and spec["N"] >= C.GEMM_SPLIT_K * C.SPLIT_K_MIN_K else 1)


def entry_key(layer, gemm, M, quant, block_m, split_k=1):
    """(functional, LUT bins) of one GEMM of a layer at M tokens: the database key."""
    spec = LAYERS[layer]
    act_name, q = QUANTS[quant]
    n_out, k_in = (2 * spec["N"], spec["K"]) if gemm == 1 else (spec["K"], spec["N"])
    if q == INT4:
        f = dict(dtype=act_name, b_dtype="u8", MUL_ROUTED_WEIGHT=gemm == 2, BLOCK_SIZE_M=block_m, SPLIT_K=1)
    else:
        f = dict(ab_dtype="fp8e4nv" if q else act_name, c_dtype=act_name, QUANT=q, MUL_ROUTED_WEIGHT=gemm == 2,
                 ALIGNED=True, BLOCK_SIZE_M=block_m, SPLIT_K=split_k, ALIGNED16=True)
    return f, [bin_of(tokens_per_expert(layer, M), C.TOKENS_PER_EXPERT_BINS), bin_of(n_out, C.GEMM_NK_BINS),
               bin_of(k_in, C.GEMM_NK_BINS)]


# ---------------------------------------------------------------- one GEMM's inputs
class GemmCase:
    """GEMM1 (x @ w1^T, [slots, 2N]) or GEMM2 (act @ w2^T * routed weight, [slots, K])
    of one layer at M tokens, with the operator's block size and quantization."""

    def __init__(self, layer, gemm, M, quant, block_m, seed=0, split_k=1):
        import torch
        from python.jit import moe as mj

        self.torch, self.mj = torch, mj
        spec = LAYERS[layer]
        E, topk = spec["E"], spec["topk"]
        act_name, self.quant = QUANTS[quant]
        self.with_zp = quant != "int4_sym"
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[act_name]
        self.act_name = act_name
        g = torch.Generator(device="cuda").manual_seed(seed + M)
        N_out, K_in = (2 * spec["N"], spec["K"]) if gemm == 1 else (spec["K"], spec["N"])
        rows = M if gemm == 1 else M * topk
        self.top_k = topk if gemm == 1 else 1
        self.shape = dict(layer=layer, gemm=gemm, M=M, E=E, topk=topk, N=N_out, K=K_in)
        x = torch.randn(rows, K_in, device="cuda", generator=g).to(dt)
        w = None if self.quant == INT4 else torch.randn(E, N_out, K_in, device="cuda", generator=g,
                                                        dtype=dt) / K_in ** 0.5
        self.ids = torch.rand(M, E, device="cuda", generator=g).topk(topk, dim=-1).indices.to(torch.int32)
        tw = torch.rand(M, topk, device="cuda", generator=g) + 0.1
        self.weights = (tw / tw.sum(-1, keepdim=True)) if gemm == 2 else None
        self.mul = gemm == 2
        self.a_s = self.b_s = None
        if self.quant == INT4:
            # Random packed nibbles, scales and zero points: fresh data with
            # the layout the kernel reads (python/jit/moe_quant.quantize_int4_groups).
            G = K_in // INT4_GROUP
            self.a, self.a_deq = x, x.float()
            self.b = torch.randint(0, 256, (E, N_out, K_in // 2), dtype=torch.uint8, device="cuda", generator=g)
            self.b_s = torch.rand(E, N_out, G, device="cuda", generator=g) * 2e-2 + 1e-3
            self.b_zp = (torch.randint(0, 256, (E, -(-N_out // 2), G), dtype=torch.uint8, device="cuda", generator=g)
                         if self.with_zp else None)
        elif self.quant == C.QUANT_NONE:
            self.a, self.b = x, w
            self.a_deq, self.b_deq = x.float(), None
        elif self.quant == C.QUANT_FP8_TENSOR:
            self.a_s = (x.float().abs().amax().clamp(min=1e-10) / 448.0).reshape(1)
            self.a = mj.per_tensor_quant_fp8(x, self.a_s)
            self.b_s = w.float().abs().amax((1, 2)).clamp(min=1e-10) / 448.0
            self.b = (w.float() / self.b_s[:, None, None]).to(torch.float8_e4m3fn)
            self.a_deq = self.a.float() * self.a_s
        elif self.quant == C.QUANT_FP8_CHANNEL:
            # Per-token activation scales [rows] and per-output-channel weight scales [E, N_out]
            # (FP8-dynamic checkpoints), as fused_experts quantizes them (python/jit/moe_quant).
            from python.jit.moe_quant import per_token_quant_fp8
            self.a, self.a_s = per_token_quant_fp8(x)
            self.b_s = w.float().abs().amax(2).clamp(min=1e-10) / 448.0
            self.b = (w.float() / self.b_s[:, :, None]).to(torch.float8_e4m3fn)
            self.a_deq = self.a.float() * self.a_s.reshape(-1, 1)
        else:
            self.a, a_s = mj.per_token_group_quant_fp8(x)
            # Group-major, as fused_experts lays out its activations' scales (moe_fused.cc
            # quantize_a): the kernels read them through strides, so this times that layout.
            self.a_s = a_s.t().contiguous().t()
            self.b, self.b_s = _quant_block(w)
            self.a_deq = self.a.float() * self.a_s.repeat_interleave(128, 1)[:, :K_in]
        del w
        self.block_m = block_m
        self.sorted, self.expert_ids, self.ntpp = mj.moe_align_block_size(self.ids, block_m, E)
        # Split-K: SPLIT_K partial rows per slot (slot * SPLIT_K + s), summed by error().
        self.split_k = split_k
        self.c = torch.empty(M * topk * split_k, N_out, device="cuda", dtype=dt)
        self.functional, self.bins = entry_key(layer, gemm, M, quant, block_m, split_k)
        self.ref = self._reference()

    def _b_deq(self, e):
        if self.quant == INT4:
            from python.jit.moe_quant import dequantize_int4_groups
            return dequantize_int4_groups(self.b[e:e + 1], self.b_s[e:e + 1],
                                          self.b_zp[e:e + 1] if self.b_zp is not None else None,
                                          INT4_GROUP)[0].float()
        b = self.b[e].float()
        if self.quant == C.QUANT_FP8_TENSOR:
            return b * self.b_s[e]
        if self.quant == C.QUANT_FP8_BLOCK:
            s = self.b_s[e].repeat_interleave(128, 0).repeat_interleave(128, 1)
            return b * s[:b.shape[0], :b.shape[1]]
        if self.quant == C.QUANT_FP8_CHANNEL:
            return b * self.b_s[e][:, None]
        return b

    def _reference(self):
        torch = self.torch
        flat = self.ids.reshape(-1).long()
        ref = torch.empty(self.c.shape[0] // self.split_k, self.c.shape[1], device="cuda", dtype=torch.float32)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        for e in flat.unique().tolist():
            s = (flat == e).nonzero().flatten()
            ref[s] = self.a_deq[s // self.top_k] @ self._b_deq(e).T
        torch.backends.cuda.matmul.allow_tf32 = prev
        if self.mul:
            ref *= self.weights.reshape(-1, 1)
        return ref

    def weight_bytes(self):
        """Bytes of the touched experts' packed weights, scales and zero points."""
        used = self.ids.unique().numel()
        return used * sum(t[0].numel() * t.element_size() for t in (self.b, self.b_s, self.b_zp) if t is not None)

    @property
    def kernel(self):
        return WQ_RULE if self.quant == INT4 else "fused_moe_gemm"

    def launch(self, cfg):
        full = dict(cfg, BLOCK_SIZE_M=self.block_m, **({"SPLIT_K": self.split_k} if self.split_k > 1 else {}))
        if self.quant == INT4:
            from python.jit.moe_quant import grouped_gemm_wq_launch
            return grouped_gemm_wq_launch(self.a, self.b, self.c, self.weights, self.sorted, self.expert_ids,
                                          self.ntpp, self.top_k, full, 4, self.b_s, self.b_zp, INT4_GROUP,
                                          mul_routed_weight=self.mul)
        return self.mj.grouped_gemm_launch(self.a, self.b, self.c, self.weights, self.sorted, self.expert_ids,
                                           self.ntpp, self.top_k, full, mul_routed_weight=self.mul,
                                           quant=self.quant, a_scale=self.a_s, b_scale=self.b_s)

    @property
    def rule(self):
        from python import rules
        return next(r for r in rules.KERNELS if r.name == self.kernel)

    def run(self, cfg):
        from python.jit_launch import aot_form, aot_launch
        from tritonsrc.moe.grouped_gemm import fused_moe_kernel
        from tritonsrc.moe.grouped_gemm_wq import fused_moe_wq_kernel
        grid, args, kwargs = self.launch(cfg)
        if aot_form():  # the cubin the build ships for this entry's functional (python/tune.py sets it)
            aot_launch(self.rule, self.functional, cfg, grid, args, kwargs)
        else:
            (fused_moe_wq_kernel if self.quant == INT4 else fused_moe_kernel)[grid](*args, **kwargs)

    def error(self, cfg, run=None):
        """Relative error of config cfg (run by `run`, default this GEMM's kernel) on a poisoned output."""
        self.c.fill_(float("nan"))
        (run or self.run)(cfg)
        self.torch.cuda.synchronize()
        c = self.c.float().reshape(-1, self.split_k, self.c.shape[1]).sum(1)
        if not self.torch.isfinite(c).all():
            return float("inf")
        return ((c - self.ref).norm() / self.ref.norm().clamp_min(1e-30)).item()


def _quant_block(w):
    import torch
    E, R, Cn = w.shape
    pr, pc = (-R) % 128, (-Cn) % 128
    blk = torch.nn.functional.pad(w.float(), (0, pc, 0, pr)).reshape(E, (R + pr) // 128, 128, (Cn + pc) // 128, 128)
    s = blk.abs().amax((2, 4)).clamp(min=1e-10) / 448.0
    q = (blk / s[:, :, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q.reshape(E, R + pr, Cn + pc)[:, :R, :Cn].contiguous(), s


def routing_seeds(layer, M, block_m):
    """Random routings to time an M with: two where an expert may span several blocks
    (more than half a block of slots per expert on average). There the grouped order
    (GROUP_SIZE_M 16) saves an expert's second block from re-reading its weights, and
    whether GROUP_SIZE_M 1 pays for it depends on which blocks land next to each other:
    Mixtral-like fp8 block GEMM2 at M=64 with G1 timed 0.139 ms on the tuner's routing
    and 0.223 ms on bench_moe's (H200, 1b68bba), where G16 ran 0.126 ms."""
    return (0, 1) if 2 * tokens_per_expert(layer, M) > block_m else (0, )


def entry_groups(work, rule_name_of):
    """{(rule name, functional name, bins): [(layer, quant, M, block_m, gemm, split_k), ...]}.
    One database entry serves every M whose key it is (tokens per expert 1 is DeepSeek-like
    M=1 with 8 experts touched and M=32 with ~160): the entry is tuned over all of them."""
    groups = {}
    for layer, quant, M, bm, gemm in work:
        split = operator_split_k(layer, gemm, M, quant, bm)
        f, bins = entry_key(layer, gemm, M, quant, bm, split)
        groups.setdefault((rule_name_of[quant], functional_name(f), tuple(bins)), []).append(
            (layer, quant, M, bm, gemm, split))
    return groups


def bin_entry(fname, bins, shape, results, per_case, runs, default, flops, roof=None):
    """tune_shared.combined_entry for runs of (M, routing seed), with the first run's TF/s and
    (int4) roofline fraction."""
    entry = T.combined_entry(fname, bins, shape, results, per_case, [{"M": M, "seed": seed} for M, seed in runs],
                             default)
    entry["tflops"] = round(flops / entry["time_ms"] / 1e9, 1)
    if roof:
        entry["roofline"] = round(roof / entry["time_ms"], 3)
    return entry


def other_runs_text(entry):
    """"; M=64 seed 1: 0.2110 (fastest 0.2100)" for each run after the first (the table's ms column)."""
    return "".join(f"; M={t['M']} seed {t['seed']}: {t['time_ms']:.4f} (fastest {t['fastest_ms']:.4f})"
                   for t in entry.get("tuned_over", [])[1:])


# ---------------------------------------------------------------- the tuning loop
def tune_moe(args, rule, load_db, save_db, db_path):
    import torch
    import triton

    if any(QUANTS[q][1] == C.QUANT_FP8_CHANNEL for q in args.quants.split(",")):
        raise SystemExit("fp8_channel runs the sm_90 Gluon kernel at prefill sizes: tune it with "
                         "`python python/tune.py moe_gluon --quants fp8_channel`")
    if "int4_sym" in args.quants.split(","):
        raise SystemExit("int4_sym tunes the sm_90 int4 GEMM's functional without zero points: "
                         "`python python/tune.py moe_gluon --quants int4_sym` (fused_moe_gemm_wq's entries do "
                         "not tell the two apart: tune it with --quants int4)")
    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    from python import rules as all_rules
    rule_of = {q: (next(r for r in all_rules.KERNELS if r.name == WQ_RULE) if QUANTS[q][1] == INT4 else rule)
               for q in args.quants.split(",")}
    dbs = {r.name: load_db(r.name, arch, r) for r in rule_of.values()}
    for r in rule_of.values():
        dbs[r.name]["keys"] = [k.arg for k in r.autotune_keys]
    done = {(name, e["functional"], tuple(e["bins"])) for name, db in dbs.items() for e in db["entries"]}
    work = []
    for layer in args.layers.split(","):
        for quant in args.quants.split(","):
            for M in map(int, args.tokens.split(",")):
                spec = LAYERS[layer]  # the block size fused_experts picks for this layer at M
                auto = C.block_size_m(M, topk=spec["topk"], num_experts=spec["E"])
                if QUANTS[quant][1] == INT4:  # the operator caps the weight-only block size at 64
                    sizes = [b for b in C.WQ_BLOCK_SIZES_M if args.block_sizes == "all" or b == min(auto, 64)]
                else:
                    sizes = [auto] if args.block_sizes == "auto" else list(C.BLOCK_SIZES_M)
                for bm in sizes:
                    for gemm in map(int, args.gemms.split(",")):
                        work.append((layer, quant, M, bm, gemm))
    groups = entry_groups(work, {q: r.name for q, r in rule_of.items()})
    bw = T.copy_bandwidth(torch, triton) if any(QUANTS[q][1] == INT4 for q in rule_of) else float("nan")
    start = time.time()
    pool = T.compile_pool(args.jobs)
    print(f"MoE GEMM tuning on sm_{arch}: {len(groups)} entries ({len(work)} shapes), {args.jobs} compile workers, "
          f"budget {args.budget_s:.0f} s", flush=True)
    print("| # | layer | quant | M | GEMM | BLOCK_M | best config | ms | TF/s | default ms | x | candidates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for i, ((rule_name, fname, bins), items) in enumerate(groups.items(), 1):
        if time.time() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent after {i - 1} of {len(groups)} entries: "
                  f"run the same command again to resume", flush=True)
            break
        layer, quant, _, bm, gemm, split = items[0]
        f, _ = entry_key(layer, gemm, items[0][2], quant, bm, split)
        rule_q = rule_of[quant]
        db = dbs[rule_name]
        if not rule_q.valid(f, arch) or (not args.retune and (rule_name, fname, bins) in done):
            continue
        default = dict(rule_q.tuning.default(f, arch))
        space = rule_q.tuning.all_configs(f, arch)
        most = max(tokens_per_expert(layer, M) for _, _, M, *_ in items)
        cands = quick_space(space, bm, quant, most) if args.space == "quick" else space
        cands = ([default] if default not in cands else []) + cands
        per_case, shapes, runs = [], [], []
        for M, seed in [(M, seed) for _, _, M, *_ in items for seed in routing_seeds(layer, M, bm)]:
            case = GemmCase(layer, gemm, M, quant, bm, seed=seed, split_k=split)
            runs.append((M, seed))
            if not per_case:  # the candidates compile once: every M of the entry launches the same kernels
                compile_err = T.compile_all(pool, T.candidate_jobs(rule_q.name, f, arch, cands,
                                                                   KERNELS[case.kernel], case.launch))
            bench = lambda cfg: T.kernel_ms(lambda: case.run(cfg), args.rep_ms)  # noqa: E731
            per_case.append(T.measure(cands, compile_err, case.error, TOL[case.act_name], bench))
            flops = 2 * M * case.shape["topk"] * case.shape["N"] * case.shape["K"]
            roof = case.weight_bytes() / bw * 1e3 if case.quant == INT4 else None
            shapes.append((case.shape, case.bins, flops, roof))
            del case
            torch.cuda.empty_cache()
        results = T.combine_cases(per_case)
        best, second, default_ms = T.best_second_default(results, default)
        Ms = ",".join(str(it[2]) for it in items)
        if best[0] == float("inf"):
            print(f"| {i} | {layer} | {quant} | {Ms} | {gemm} | {bm} | no valid config | | | | | {len(results)} |")
            continue
        shape, case_bins, flops, roof = shapes[0]
        entry = bin_entry(fname, case_bins, shape, results, per_case, runs, default, flops, roof)
        first_ms = entry["time_ms"]
        T.store_entry(db, entry, lambda: save_db(db, rule_name, arch), db_path(rule_name, arch), arch)
        done.add((rule_name, fname, bins))
        roof_s = f" (roofline {entry['roofline']:.2f})" if "roofline" in entry else ""
        print(f"| {i} | {layer} | {quant} | {Ms} | {gemm} | {bm} | {config_name(best[1])} | {first_ms:.4f}{roof_s}"
              f"{other_runs_text(entry)} | {entry['tflops']} | {default_ms:.4f} | {default_ms / best[0]:.2f} | "
              f"{len(results)} |", flush=True)
    pool.shutdown()
    print(f"done in {time.time() - start:.0f} s; databases {[str(db_path(n, arch)) for n in dbs]}", flush=True)
    return dbs[rule.name] if rule.name in dbs else next(iter(dbs.values()))


def add_arguments(ap):
    ap.add_argument("--layers", default="mixtral,deepseek")
    ap.add_argument("--tokens", default="1,64,512,4096")
    ap.add_argument("--quants", default="bf16")
    ap.add_argument("--gemms", default="1,2")
    ap.add_argument("--space", choices=["quick", "all"], default="quick")
    ap.add_argument("--block-sizes", choices=["auto", "all"], default="auto")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new entries after this")
    ap.add_argument("--jobs", type=int, default=max(1, min(16, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--rep-ms", type=int, default=25)
    ap.add_argument("--retune", action="store_true",
                    help="tune the listed entries again, replacing theirs (a new candidate in the space); "
                         "a stopped run does not resume, it starts over")
    return ap
