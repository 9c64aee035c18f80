"""int4 w4a16 decode GEMMs: the Gluon kernel with the weights as wgmma's register operand
(tritonsrc/moe/grouped_gemm_wq_hopper.py) against the production fused_moe_wq_kernel (issue 13.6).

Mixtral-like int4 layer (group 128, zero points), bf16, random top-2 routing (or balanced: --routing), align block 16.
GEMM1 [M, 4096] x w1[e] [28672, 4096]^T and GEMM2 [2M, 14336] x w2[e] [4096, 14336]^T (routed
weight, split-K partials summed), each timed alone (CUDA-graph replays, median) with the
fraction of the HBM roofline of the touched experts' packed weights, scales and zero points.
Every variant is checked against a float64 reference of the dequantized weights (max error
over max |reference|); the production kernel's error is printed beside it.

    python3 bench/experiments/int4_wgmma.py [--tokens 1,8,16,32,64] [--json ...]
    python3 bench/experiments/int4_wgmma.py --block-m 8,16,32 --tokens 1,8,64   (align blocks of 8 tokens:
        wgmma N 8, 96 registers instead of 127, half the activation staging; of 32: an expert's 17-32
        tokens in one block, each weight tile dequantized once; the Gluon kernel only)
    python3 bench/experiments/int4_wgmma.py --group 256 --k-tiles 128,256 --tokens 1,16   (the K tile's
        per-tile overhead: a 256-k tile has ~5.4 SASS instructions per packed byte against 6.8 at 128;
        group 256 lets both run on the same weights)
    python3 bench/experiments/int4_wgmma.py --tokens 64 --routing balanced --variants 64,0,4,2   (exactly
        M * top-k / E tokens an expert: at M=64 one full block of 16 each, no second, partly filled block
        reading the same weight tiles again; against --routing random, what the second block costs)
    bash bench/experiments/ncu_int4_forms.sh --tokens 1 --variants 64,0,4,2/64,0,8,2   (--profile: each
        form launched once, untimed, for ncu; the script prints the counters a form per row)
    python3 bench/experiments/int4_wgmma.py --variants 64,0,4,2 --block-m 16,32 --x-dot-order --tokens 1,16,64
        (each distance-2 form also with its activations pre-permuted into the dot's k order and copied by
        cp.async: no activation register, no permutation, no STS; rows of no token not read. 16 rows: 340
        SASS instructions a pair instead of 352, 117 registers instead of 127; 32 rows: 128 instead of 167,
        so an expert's 17-32 tokens run as one program at 4 CTAs an SM; `--variants 64,0,4,2,96`: 16 rows
        at 96 registers without spills, 5 CTAs an SM, where the register form spills 64 bytes)
    python3 bench/experiments/int4_wgmma.py --x-dot-order --variants 64,0,4,2/64,0,4,2,0,1/64,0,4,2,128,1
        --tokens 1,16,64   (PAIR_BLOCKS: one program for two blocks of an expert, each weight tile
        dequantized once for both; against the 16-row X_DOT_ORDER form, under --routing random and balanced)
    python3 bench/experiments/int4_wgmma.py --variants 64,0,4,2 --gemm1-splits 1,2,4 --gemm2-splits 4,8
        --tokens 1,8   (split-K for the decode GEMM1: at M=1 its 896 programs of 64 rows are ~1.4 waves of
        an H100's 4-5 a SM, and a partial wave runs with fewer bytes in flight; M >= 8 has ~4x more)
"""
import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# (BLOCK_SIZE_N, PREFETCH, NUM_STAGES): PREFETCH 1-2 register prefetch, 0 a cp.async ring of NUM_STAGES
# tiles; SPLIT_K is swept for GEMM2. (Taking two M blocks of one expert per program, MERGE 2, lost in
# every row of the twentieth session's run and is gone: bench/results/h100/int4_wgmma_sm90.json. Four K
# tiles per pair of CTA barriers, TILES_PER_SYNC 4, and the next tile's loads after the shared-memory
# fence, LATE_LOADS, lost on the H200 at every M and are gone too: bench/results/int4_wgmma_sm90.json
# at 31a50f3, the code in git history.)
# A fourth entry: LOAD_DISTANCE (2: activations and scales two K tiles ahead, the loop unrolled by two,
# its two weight tiles copied together; that copy one tile at a time, PAIR_COPIES 0, lost at every M on
# the H100 in the twenty-fifth session, bench/results/h100/int4_wgmma_sm90.json, and is gone). 128 rows as
# two warpgroups of 8 warps sharing the activation tile, distance 2's activations through a cp.async ring
# of their own, and that ring at 96 registers lost at every M and GEMM on the H100 at aa09baa and are gone
# (the code in git history).
VARIANTS = [(64, 0, 8, 1), (64, 0, 4, 1), (64, 0, 4, 2), (64, 0, 8, 2), (128, 0, 4, 1), (128, 0, 4, 2),
            (64, 2, 2, 1)]
# Align blocks other than 16 (--block-m): the ring forms only, to keep a device run short.
OTHER_BLOCK_VARIANTS = [(64, 0, 4, 1), (64, 0, 4, 2), (64, 0, 8, 2), (128, 0, 4, 1)]
GEMM2_SPLITS = "1,4"  # unsplit and the operator's split (configs.WQ_SPLIT_K)


def dequant(torch, b, s, z, group):
    """Packed [N, K // 2] uint8, scales [N, K // g], zero points [cdiv(N, 2), K // g] -> float64 [N, K]."""
    q = torch.stack(((b & 0xF), (b >> 4)), dim=-1).reshape(b.shape[0], -1).double()
    n = torch.arange(b.shape[0], device=b.device)
    zp = ((z[n // 2].int() >> (4 * (n % 2))[:, None]) & 0xF).double()
    return (q - zp.repeat_interleave(group, 1)) * s.double().repeat_interleave(group, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,8,16,32,64")
    ap.add_argument("--group", type=int, default=0, help="group size of the layer (default: the coverage layer's)")
    ap.add_argument("--k-tiles", default="", help="the Gluon kernel's K tiles to time (default: the operator's)")
    ap.add_argument("--block-m", default="16", help="align block sizes for the Gluon kernel (8, 16, 32)")
    ap.add_argument("--variants", default="", help="Gluon forms BLOCK_SIZE_N,PREFETCH,NUM_STAGES,LOAD_DISTANCE"
                    "[,maxnreg[,pair]] separated by ';' or '/' (maxnreg 0: none; pair 1: PAIR_BLOCKS with "
                    "X_DOT_ORDER) (default: VARIANTS)")
    ap.add_argument("--gemm1-splits", default="1", help="split-K counts for GEMM1 (partials summed after)")
    ap.add_argument("--gemm2-splits", default=GEMM2_SPLITS)
    ap.add_argument("--routing", choices=["random", "balanced"], default="random",
                    help="balanced: slot j of token m to expert (m * top-k + j) mod E")
    ap.add_argument("--x-dot-order", action="store_true", help="also time each distance-2 Gluon form with "
                    "X_DOT_ORDER (activations pre-permuted outside the timing)")
    ap.add_argument("--profile", action="store_true", help="launch each form once after its check, untimed "
                    "(for ncu: bench/experiments/ncu_int4_forms.sh); writes no JSON")
    ap.add_argument("--json", default=str(REPO / "bench/results/int4_wgmma_sm90.json"))
    args = ap.parse_args()
    # '/' as well as ';': a device run's BENCHES list is ';'-separated
    chosen = [tuple(int(v) for v in form.split(",")) for form in re.split("[;/]", args.variants)] if args.variants else None
    splits = {1: [int(v) for v in args.gemm1_splits.split(",")], 2: [int(v) for v in args.gemm2_splits.split(",")]}
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import torch
    import triton

    from bench_common import commit_id, copy_bandwidth, write_experiment
    from moe_coverage_quant import INT4_GROUP, LAYER, blocks_of_16, int4_layer
    from python.jit import moe as mj
    from python.jit import moe_quant as mq
    from tritonsrc.moe import configs as C

    E, topk, K, N = LAYER["E"], LAYER["topk"], LAYER["K"], LAYER["N"]
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    group = args.group or INT4_GROUP
    k_tiles = [int(k) for k in args.k_tiles.split(",")] if args.k_tiles else [mq.wq_hopper_block_k(group)]
    block_ms = [int(m) for m in args.block_m.split(",")]
    w1, w2, s1, s2, z1, z2 = int4_layer(torch, dev, gen, group)
    z1 = z1 & 0x77  # zero points 0..7: q - zp spans both signs
    z2 = z2 & 0x77
    bw = copy_bandwidth(dev)
    db = json.loads((REPO / "tuning/sm_90/fused_moe_gemm_wq.json").read_text())["entries"]
    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}, commit {commit_id()}; copy bandwidth "
          f"{bw / 1e9:.0f} GB/s; int4 g{group} zp, E {E}, top-{topk}, K {K}, N {N}, {args.routing} routing")
    print("| M | GEMM | kernel | config | us | roofline | max err / max ref |\n|---|---|---|---|---|---|---|")
    rows = []
    for M in [int(m) for m in args.tokens.split(",")]:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        if args.routing == "balanced":
            ids = (torch.arange(M * topk, device=dev, dtype=torch.int32) % E).view(M, topk)
        else:
            ids = torch.rand(M, E, device=dev, generator=gen).topk(topk, dim=-1).indices.to(torch.int32)
        wts = torch.rand(M, topk, device=dev, generator=gen).flatten().contiguous()
        aligned = {bm: mj.moe_align_block_size(ids, bm, E) for bm in {16, *block_ms}}
        sid, eid, ntpp = aligned[16]
        act = torch.randn(M * topk, N, device=dev, dtype=torch.bfloat16)
        experts = torch.unique(ids).tolist()
        ids_flat = ids.flatten()
        blocks = blocks_of_16(torch, ids, E)  # routing draws differ between benches, and so do their times
        print(f"| {M} | routing | blocks of 16 per expert | {blocks} | {sum(blocks)} | | |", flush=True)
        if args.x_dot_order and not args.profile:
            # What X_DOT_ORDER adds before GEMM1 (GEMM2's input would come from act_and_mul in that order):
            # one copy of the hidden states, here torch's permute (an upper bound for a copy kernel).
            for bk in k_tiles:
                t = triton.testing.do_bench_cudagraph(lambda: mq.dot_order_activations(x, bk), rep=100,
                                                      return_mode="median") * 1e3
                rows.append(dict(M=M, gemm=1, routing=args.routing, kernel="dot_order_copy",
                                 config={"BLOCK_SIZE_K": bk}, us=t, roofline=0.0, err=0.0))
                print(f"| {M} | 1 | dot_order_copy | {{\"BLOCK_SIZE_K\": {bk}}} | {t:.1f} | | |", flush=True)
        for gemm, (a, b, s, z, n_out, k_in, tk, wt) in {
                1: (x, w1, s1, z1, 2 * N, K, topk, None), 2: (act, w2, s2, z2, K, N, 1, wts)}.items():
            ref = torch.zeros(M * topk, n_out, dtype=torch.float64, device=dev)
            for e in experts:
                sl = (ids_flat == e).nonzero().flatten()
                ref[sl] = a[sl // tk].double() @ dequant(torch, b[e], s[e], z[e], group).T
                if wt is not None:
                    ref[sl] *= wt[sl, None].double()
            touched = len(experts) * sum(t[0].numel() * t.element_size() for t in (b, s, z))
            entry = next((e for e in db if e["shape"].get("M") == M and e["shape"].get("gemm") == gemm), None)
            base_cfg = dict(entry["config"]) if entry else C.wq_default_config(M, 4)
            candidates = [("production", dict(base_cfg, BLOCK_SIZE_M=16))]
            if gemm == 2:  # and split as the operator splits a decode GEMM2 (its default split config)
                candidates.append(("production", dict(C.wq_gemm_default(16, 4, 90, C.WQ_SPLIT_K), BLOCK_SIZE_M=16,
                                                      SPLIT_K=C.WQ_SPLIT_K)))
            for bm in block_ms:
                for bk in k_tiles:
                    for form in chosen or (VARIANTS if bm == 16 else OTHER_BLOCK_VARIANTS):
                        bn, pf, st, dist = form[:4]
                        for sk in splits[gemm]:
                            cfg = dict(BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk, PREFETCH=pf, NUM_STAGES=st, LOAD_DISTANCE=dist,
                                       SPLIT_K=sk, num_warps=4)
                            if len(form) > 4 and form[4]:  # a register cap (maxnreg), e.g. 96: 5 CTAs an SM
                                cfg["maxnreg"] = form[4]
                            pair = len(form) > 5 and form[5]  # PAIR_BLOCKS: X_DOT_ORDER only
                            if not pair:
                                candidates.append(("gluon", dict(cfg, BLOCK_SIZE_M=bm) if bm != 16 else cfg))
                            if (args.x_dot_order or pair) and dist == 2 and pf == 0:
                                xdot = dict(cfg, X_DOT_ORDER=1, **({"PAIR_BLOCKS": 1} if pair else {}))
                                candidates.append(("gluon", dict(xdot, BLOCK_SIZE_M=bm) if bm != 16 else xdot))
            for kind, cfg in candidates:
                sk = cfg.get("SPLIT_K", 1)
                # 16-bit partials, as the operator writes them
                c = torch.empty(M * topk * sk, n_out, device=dev, dtype=torch.bfloat16)

                if kind == "production":
                    def run(cfg=cfg, c=c):
                        mq.invoke_grouped_gemm_wq(a, b, c, wt, sid, eid, ntpp, tk, dict(cfg), 4, s, z, group,
                                                  mul_routed_weight=wt is not None)
                else:
                    hcfg = dict(cfg, GROUP_SIZE_M=1 if M <= 16 else 16, NUM_STAGES=max(cfg["NUM_STAGES"], 2))
                    bk = hcfg.pop("BLOCK_SIZE_K")
                    bm = hcfg.pop("BLOCK_SIZE_M", 16)
                    hcfg.pop("SPLIT_K")
                    xdot = bool(hcfg.pop("X_DOT_ORDER", 0))
                    a_in = mq.dot_order_activations(a, bk) if xdot else a  # outside the timing

                    def run(hcfg=hcfg, c=c, sk=sk, bk=bk, bm=bm, a_in=a_in, xdot=xdot):
                        mq.invoke_grouped_gemm_wq_hopper(a_in, b, c, wt, *aligned[bm], tk, s, z, group, hcfg,
                                                         mul_routed_weight=wt is not None, split_k=sk, block_k=bk,
                                                         block_m=bm, x_dot_order=xdot)
                try:
                    c.fill_(float("nan"))
                    run()
                    torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001 - a variant the compiler refuses
                    print(f"| {M} | {gemm} | {kind} | {cfg} | failed: {type(e).__name__}: {str(e)[:120]} | | |")
                    continue
                out = c.view(M * topk, sk, n_out).double().sum(1) if sk > 1 else c.double()
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                if args.profile:  # the check's launch is the one ncu records; no timing
                    print(f"| {M} | {gemm} | {kind} | {json.dumps(cfg)} | launched | | {err:.1e} |", flush=True)
                    continue
                t = triton.testing.do_bench_cudagraph(run, rep=100, return_mode="median") * 1e3
                r = dict(M=M, gemm=gemm, routing=args.routing, kernel=kind, config=cfg, us=t, roofline=touched / bw * 1e6 / t, err=err)
                rows.append(r)
                print(f"| {M} | {gemm} | {kind} | {json.dumps(cfg)} | {t:.1f} | {r['roofline']:.2f} | {err:.1e} |",
                      flush=True)
        if not args.profile:
            write_experiment(args.json, rows, bw)  # after every M: a timeout keeps what ran
    if not args.profile:
        print_best(rows)


def is_default(cfg, functional):
    """Whether a timed Gluon form is the rule's default config for `functional` (align blocks of 16;
    GROUP_SIZE_M is set by the experiment per M, so it is not compared)."""
    from python.rules_moe_hopper_wq import fused_moe_gemm_wq_hopper as rule
    default = rule.tuning.default(functional, 90)
    return cfg.get("BLOCK_SIZE_M", 16) == 16 and not cfg.get("X_DOT_ORDER") and not cfg.get("maxnreg") and all(
        cfg.get(k, 0) == v for k, v in default.items() if k != "GROUP_SIZE_M")


def print_best(rows):
    """Per (M, GEMM, split): the fastest Gluon form against the default form, the decision a run is for."""
    print("| M | GEMM | split | default us | best us | best / default | best form |\n|---|---|---|---|---|---|---|")
    keys = sorted({(r["M"], r["gemm"], r["config"].get("SPLIT_K", 1)) for r in rows if r["kernel"] == "gluon"})
    for M, gemm, sk in keys:
        same = [r for r in rows if r["kernel"] == "gluon" and (r["M"], r["gemm"], r["config"].get("SPLIT_K", 1)) ==
                (M, gemm, sk)]
        functional = {"dtype": "bf16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": gemm == 2, "BLOCK_SIZE_M": 16,
                      "BLOCK_SIZE_K": same[0]["config"]["BLOCK_SIZE_K"], "SPLIT_K": sk, "HAS_ZP": True,
                      "X_DOT_ORDER": False}
        default = next((r for r in same if is_default(r["config"], functional)), None)
        best = min(same, key=lambda r: r["us"])
        ref = f"{default['us']:.1f}" if default else "-"
        ratio = f"{best['us'] / default['us']:.3f}" if default else "-"
        print(f"| {M} | {gemm} | {sk} | {ref} | {best['us']:.1f} | {ratio} | {json.dumps(best['config'])} |")


if __name__ == "__main__":
    main()
