"""Experiment (issue 18 item 1): can the bf16 MoE grouped GEMM reach
torch._grouped_mm (CUTLASS) on the H200? JIT only, no AOT build needed (the
AOT columns are filled when an installed aotriton is found).

    python bench/experiments/moe_gemm_tma.py [--check] [--bench] [--layers mixtral,deepseek]
        [--tokens 512,4096] [--routing balanced] [--variants all] [--warm-processes 12]
        [--budget-s 150] [--json PATH] [--smoke]

Per case (layer, M tokens, GEMM 1 or 2, routing) it times, on the same
routed rows:
  aot          the production AOT kernel (aotriton.invoke_fused_moe_kernel,
               block size aotriton.moe_gemm_block_size(M), tuned LUT), as
               bench/bench_moe.py does; aot_bm128: the same at block size 128;
  prod         the production kernel (tritonsrc/moe/grouped_gemm.py) by the
               JIT with the tuning database's config for this case;
  prod_bm128   the production kernel, block size 128 (the heuristic lever);
  tma*/persist*  the kernels of moe_gemm_tma_kernels.py (weights by TMA, host
               descriptors; persistent flattened tile loop; A gathered or
               pre-sorted), a few configs each;
  grouped_mm   torch._grouped_mm on the rows pre-sorted by expert (the
               gather is not timed, as in bench_moe.py).
The *_sortedA variants read A pre-sorted into moe_align order; their
"+gather" number adds a timed index_select that builds it.
Every (variant, config) is first checked against a float32 reference of the
same case (output poisoned with NaN; rel. Frobenius error < 1e-2) and is not
timed if it fails. TF/s count routed slots only (2 * slots * N * K).
--smoke: tiny fp16 shapes, check only, runs under TRITON_INTERPRET=1 on CPU.
"""
import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: bench.experiments, tritonsrc and python/ import from the repo root
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

from bench.experiments.moe_gemm_tma_kernels import moe_gemm_tma_kernel, moe_gemm_tma_persistent_kernel  # noqa: E402
from tritonsrc.moe import configs as C  # noqa: E402
from tritonsrc.moe.grouped_gemm import fused_moe_kernel  # noqa: E402

_T0 = time.time()
LAYERS = {
    "mixtral": dict(E=8, topk=2, K=4096, N=14336),
    "deepseek": dict(E=256, topk=8, K=7168, N=2048),
}
SMOKE_LAYER = dict(E=4, topk=2, K=96, N=80)  # K, 2N not multiples of the tiles: TMA zero fill and masks
TOL = 1e-2  # rel. Frobenius error vs float32 (bf16 output rounding is ~3e-3)
# Configs: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages); all
# compile for sm_90 within shared memory (bench/experiments/moe_gemm_tma_compile.py).
VARIANTS = {
    "prod_bm128": ("prod", {}, [(128, 256, 64, 16, 8, 3), (128, 128, 64, 16, 8, 4)]),
    "tma": ("tile", dict(A_SORTED=False, B_TMA=True),
            [(128, 256, 64, 8, 8, 3), (128, 256, 64, 8, 8, 4), (128, 128, 64, 8, 8, 4), (128, 128, 128, 8, 8, 3),
             (64, 256, 64, 8, 4, 4)]),
    "tma_sortedA": ("tile", dict(A_SORTED=True, B_TMA=True), [(128, 256, 64, 8, 8, 3), (128, 256, 64, 8, 8, 4)]),
    "persist": ("persistent", dict(A_SORTED=False, B_TMA=True, FLATTEN=True, WARP_SPECIALIZE=False),
                [(128, 256, 64, 8, 8, 3), (128, 256, 64, 8, 8, 4), (128, 128, 64, 8, 8, 4), (128, 256, 64, 16, 8, 3)]),
    "persist_sortedA": ("persistent", dict(A_SORTED=True, B_TMA=True, FLATTEN=True, WARP_SPECIALIZE=False),
                        [(128, 256, 64, 8, 8, 3), (128, 128, 64, 8, 8, 4)]),
    # Gluon, warp-specialized (loader warp + two consumer warpgroups), A pre-sorted; not interpretable.
    "gluon_ws_sortedA": ("gluon_ws", dict(A_SORTED=True), [(128, 256, 64, 8, 4, 4), (128, 256, 64, 8, 4, 3),
                                                          (128, 128, 64, 8, 4, 5)]),
    # The same, one CTA per SM walking the valid tiles (the ring runs on across tiles).
    "gluon_ws_persist_sortedA": ("gluon_ws_persistent", dict(A_SORTED=True), [(128, 256, 64, 8, 4, 4),
                                                                              (128, 256, 64, 8, 4, 3)]),
    # The same with A gathered by a cp.async loader warpgroup (no pre-sorting), B by a TMA loader warp.
    "gluon_ws": ("gluon_ws_gather", dict(A_SORTED=False), [(128, 256, 64, 8, 4, 4), (128, 256, 64, 8, 4, 3)]),
    # No descriptors at all: what the production kernel could do without new runtime support.
    "persist_ptr": ("persistent", dict(A_SORTED=False, B_TMA=False, FLATTEN=True, WARP_SPECIALIZE=False),
                    [(128, 256, 64, 8, 8, 3), (128, 128, 64, 8, 8, 4)]),
}
SMOKE_CONFIGS = [(16, 32, 32, 2, 4, 2), (32, 64, 64, 1, 4, 2)]


def cfg_name(cfg):
    return "bm{}_bn{}_bk{}_g{}_w{}_s{}".format(*cfg)


# ---------------------------------------------------------------- routing and moe_align
def routing(M, E, topk, kind, device, gen):
    if kind == "balanced":  # slot s -> expert s % E: every expert gets M*topk/E slots
        ids = (torch.arange(M * topk, device=device) % E).reshape(M, topk)
    else:
        ids = torch.rand(M, E, device=device, generator=gen).topk(topk, dim=-1).indices
    w = torch.rand(M, topk, device=device, generator=gen) + 0.1
    return (w / w.sum(-1, keepdim=True)).float().contiguous(), ids.to(torch.int32).contiguous()


def align(ids, block_m, E):
    """moe_align_block_size in torch (same layout as tritonsrc/moe/align.py):
    sorted_token_ids [numel + E*(block_m-1)] (sentinel numel), expert_ids
    [cdiv(EM, block_m)] (-1 past the last block), num_tokens_post_padded [1]."""
    dev = ids.device
    flat = ids.reshape(-1).long()
    numel = flat.numel()
    counts = torch.bincount(flat, minlength=E)
    padded = (counts + block_m - 1) // block_m * block_m
    starts = padded.cumsum(0) - padded
    order = flat.argsort(stable=True)
    e_sorted = flat[order]
    rank = torch.arange(numel, device=dev) - (counts.cumsum(0) - counts)[e_sorted]
    EM = numel + E * (block_m - 1)
    sorted_ids = torch.full((EM,), numel, dtype=torch.int32, device=dev)
    sorted_ids[starts[e_sorted] + rank] = order.to(torch.int32)
    expert_ids = torch.full((triton.cdiv(EM, block_m),), -1, dtype=torch.int32, device=dev)
    blocks = torch.repeat_interleave(torch.arange(E, device=dev, dtype=torch.int32), padded // block_m)
    expert_ids[:blocks.numel()] = blocks
    ntpp = padded.sum().reshape(1).to(torch.int32)
    return sorted_ids, expert_ids, ntpp


class Case:
    """One GEMM of a layer at M tokens: GEMM1 x[M, K] -> [slots, 2N] (top_k),
    GEMM2 act[slots, N] -> [slots, K] times the routed weights (top_k = 1)."""

    def __init__(self, layer, spec, M, gemm, route, w, dtype, device, seed=0):
        gen = torch.Generator(device=device).manual_seed(seed + 7 * M + gemm)
        self.layer, self.M, self.gemm, self.route = layer, M, gemm, route
        self.E, topk = spec["E"], spec["topk"]
        self.b = w
        _, self.N, self.K = w.shape
        self.slots = M * topk
        rows = M if gemm == 1 else self.slots
        self.top_k = topk if gemm == 1 else 1
        self.mul = gemm == 2
        self.a = torch.randn(rows, self.K, device=device, dtype=dtype, generator=gen)
        self.tw, self.ids = routing(M, self.E, topk, route, device, gen)
        self.c = torch.empty(self.slots, self.N, device=device, dtype=dtype)
        self.flops = 2 * self.slots * self.N * self.K
        self._aligned = {}
        self._ref = None

    def _reference(self):
        flat = self.ids.reshape(-1).long()
        ref = torch.zeros(self.slots, self.N, device=self.a.device, dtype=torch.float32)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        for e in flat.unique().tolist():
            s = (flat == e).nonzero().flatten()
            ref[s] = self.a[s // self.top_k].float() @ self.b[e].float().T
        torch.backends.cuda.matmul.allow_tf32 = prev
        if self.mul:
            ref *= self.tw.reshape(-1, 1)
        return ref

    def aligned(self, block_m):
        """(sorted_ids, expert_ids, ntpp, a_sorted, gather_fn) for one block size."""
        if block_m not in self._aligned:
            s, e, n = align(self.ids, block_m, self.E)
            valid = s < self.slots
            a_pad = torch.cat([self.a, torch.zeros(1, self.K, device=self.a.device, dtype=self.a.dtype)])
            idx = torch.where(valid, s.long() // self.top_k, self.a.shape[0])
            a_sorted = a_pad.index_select(0, idx)
            self._aligned[block_m] = (s, e, n, a_sorted, lambda: torch.index_select(a_pad, 0, idx, out=a_sorted))
        return self._aligned[block_m]

    def drop(self):
        """Free the case's buffers (the weights are shared and stay)."""
        self.a = self.c = self._ref = None
        self._aligned = {}

    def error(self):
        if self._ref is None:
            self._ref = self._reference()
        c = self.c.float()
        if not torch.isfinite(c).all():
            return float("inf")
        return ((c - self._ref).norm() / self._ref.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- launches
def launch_spec(kind, opts, cfg, case, num_sms):
    """(kernel, grid, args, kwargs) of one variant config on one case."""
    bm, bn, bk, group, warps, stages = cfg
    s, e, n, a_sorted, _ = case.aligned(bm)
    tw = case.tw if case.mul else torch.empty(1, device=case.a.device)
    if kind in ("gluon_ws", "gluon_ws_gather", "gluon_ws_persistent"):
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor

        from bench.experiments import moe_gemm_gluon_kernel as G
        layout = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
        b2 = case.b.view(case.E * case.N, case.K)
        b_desc = GluonDescriptor(b2, list(b2.shape), list(b2.stride()), [bn, bk], layout)
        EM = s.numel()
        grid = (triton.cdiv(EM, bm) * triton.cdiv(case.N, bn), 1, 1)
        kwargs = dict(MUL_ROUTED_WEIGHT=case.mul, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group,
                      NUM_STAGES=stages, num_warps=warps)
        if opts["A_SORTED"]:
            a_desc = GluonDescriptor(a_sorted, list(a_sorted.shape), list(a_sorted.stride()), [bm, bk], layout)
            args = [a_desc, b_desc, case.c, tw, s, e, n, case.N, case.K, EM, case.slots, case.c.stride(0), case.E]
            if kind == "gluon_ws_persistent":
                return G.moe_gemm_gluon_ws_persistent_kernel, (num_sms, 1, 1), args, kwargs
            return G.moe_gemm_gluon_ws_kernel, grid, args, kwargs
        args = [case.a, b_desc, case.c, tw, s, e, n, case.N, case.K, EM, case.slots, case.top_k, case.a.stride(0),
                case.c.stride(0), case.E]
        from tritonsrc.moe.grouped_gemm_hopper import fused_moe_gemm_hopper
        return fused_moe_gemm_hopper, grid, args, kwargs
    if kind == "prod":
        from python.jit.moe import grouped_gemm_launch
        config = dict(BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk, GROUP_SIZE_M=group, num_warps=warps,
                      num_stages=stages)
        grid, args, kwargs = grouped_gemm_launch(case.a, case.b, case.c, case.tw if case.mul else None, s, e, n,
                                                 case.top_k, config, mul_routed_weight=case.mul)
        return fused_moe_kernel, grid, args, kwargs
    b_desc = (TensorDescriptor(case.b, list(case.b.shape), list(case.b.stride()), [1, bn, bk])
              if opts["B_TMA"] else None)
    a_desc = (TensorDescriptor(a_sorted, list(a_sorted.shape), list(a_sorted.stride()), [bm, bk])
              if opts["A_SORTED"] else None)
    EM = s.numel()
    args = [case.a, a_desc, case.b, b_desc, case.c, tw, s, e, n, case.N, case.K, EM, case.slots, case.top_k,
            case.a.stride(0), case.b.stride(0), case.b.stride(1), case.c.stride(0), case.E]
    kwargs = dict(MUL_ROUTED_WEIGHT=case.mul, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group,
                  num_warps=warps, num_stages=stages, **opts)
    if kind == "persistent":
        return moe_gemm_tma_persistent_kernel, (num_sms, 1, 1), args + [num_sms], kwargs
    return moe_gemm_tma_kernel, (triton.cdiv(EM, bm) * triton.cdiv(case.N, bn), 1, 1), args, kwargs


def run(spec):
    kernel, grid, args, kwargs = spec
    kernel[grid](*args, **kwargs)


# ---------------------------------------------------------------- parallel compile
class _Kernels(dict):
    """kind -> JIT function; the Gluon one imported on first use."""

    def __missing__(self, kind):
        from bench.experiments import moe_gemm_gluon_kernel as G
        from tritonsrc.moe.grouped_gemm_hopper import fused_moe_gemm_hopper
        self.update(gluon_ws=G.moe_gemm_gluon_ws_kernel, gluon_ws_gather=fused_moe_gemm_hopper,
                    gluon_ws_persistent=G.moe_gemm_gluon_ws_persistent_kernel)
        return self[kind]


_KERNELS = _Kernels(prod=fused_moe_kernel, tile=moe_gemm_tma_kernel, persistent=moe_gemm_tma_persistent_kernel)


def _portable(kind, grid, args, kwargs):
    """A picklable launch: tensors as dtype names, descriptors as their meta."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(("T", str(a.dtype).removeprefix("torch.")))
        elif isinstance(a, TensorDescriptor):
            out.append(("D", str(a.base.dtype).removeprefix("torch."), list(a.shape), list(a.strides),
                        list(a.block_shape)))
        elif type(a).__name__ == "TensorDescriptor" and hasattr(a, "layout"):  # Gluon's, with its shared layout
            out.append(("G", str(a.base.dtype).removeprefix("torch."), list(a.shape), list(a.strides),
                        list(a.block_shape), a.layout.swizzle_byte_width, a.layout.element_bitwidth))
        else:
            out.append(a)
    return kind, grid, out, kwargs


def _warm(job):
    """Worker: compile one launch's specialization into Triton's disk cache (no launch)."""
    from triton.runtime.jit import MockTensor
    kind, grid, args, kwargs = job
    real = []
    for a in args:
        if isinstance(a, tuple) and a[0] == "T":
            real.append(getattr(torch, a[1]))
        elif isinstance(a, tuple) and a[0] == "D":
            real.append(TensorDescriptor(MockTensor(getattr(torch, a[1])), a[2], a[3], a[4]))
        elif isinstance(a, tuple) and a[0] == "G":
            from triton.experimental.gluon import language as gl
            from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor
            layout = gl.NVMMASharedLayout(swizzle_byte_width=a[5], element_bitwidth=a[6], rank=len(a[4]))
            real.append(GluonDescriptor(MockTensor(getattr(torch, a[1])), a[2], a[3], a[4], layout))
        else:
            real.append(a)
    try:
        _KERNELS[kind].warmup(*real, grid=grid, **kwargs)
        return None
    except Exception as e:  # noqa: BLE001 - reported by the main process
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _specialization(job):
    """What Triton compiles a launch for: dtypes, descriptor boxes, constexprs,
    and per integer its 16-divisibility, == 1 and width (not for the
    do_not_specialize ones); launches that agree share one compile job."""
    kind, _grid, args, kwargs = job
    kernel = _KERNELS[kind]
    skip = {kernel.arg_names.index(n) for n in getattr(kernel, "do_not_specialize", ()) if isinstance(n, str)}
    skip |= {i for i in getattr(kernel, "do_not_specialize", ()) if isinstance(i, int)}
    sig = []
    for i, a in enumerate(args):
        if isinstance(a, bool) or not isinstance(a, int):
            sig.append(a)
        elif i not in skip:
            sig.append((a % 16 == 0, a == 1, abs(a) >= 2 ** 31))
    return repr((kind, sig, sorted(kwargs.items())))


def warm_all(jobs, processes):
    if processes <= 0 or not jobs:
        return {}
    uniq = {}
    for key, job in jobs:
        uniq.setdefault(_specialization(job), (key, job))
    t = time.time()
    with ProcessPoolExecutor(max_workers=processes,
                             mp_context=__import__("multiprocessing").get_context("spawn")) as pool:
        futs = [(key, pool.submit(_warm, job)) for key, job in uniq.values()]
        errors = {}
        for key, f in futs:
            try:
                err = f.result()
            except Exception as e:  # noqa: BLE001 - a dead worker: the main process compiles it
                err = None
                print(f"  warm worker failed: {type(e).__name__}", flush=True)
            if err:
                errors[key] = err
    print(f"compiled {len(uniq)} kernels in {processes} processes in {time.time() - t:.0f} s "
          f"({len(errors)} compile errors)", flush=True)
    return errors


# ---------------------------------------------------------------- tuned production config
def tuned_prod_config(layer, M, gemm, spec):
    """(BM, BN, BK, GROUP_M, warps, stages) the AOT LUT runs for this case:
    the tuning database entry if one matches, else the heuristic default."""
    bm = C.block_size_m(M)
    n_out, k_in = (2 * spec["N"], spec["K"]) if gemm == 1 else (spec["K"], spec["N"])
    tpe = -(-M * spec["topk"] // spec["E"])

    def bin_of(v, bins):
        return next((i for i, b in enumerate(bins[:-1]) if v <= b), len(bins) - 1)

    bins = [bin_of(tpe, C.TOKENS_PER_EXPERT_BINS), bin_of(n_out, C.GEMM_NK_BINS), bin_of(k_in, C.GEMM_NK_BINS)]
    fname = (f"ab_dtype-bf16__c_dtype-bf16__QUANT-0__MUL_ROUTED_WEIGHT-{int(gemm == 2)}__ALIGNED-1__"
             f"BLOCK_SIZE_M-{bm}__SPLIT_K-1__ALIGNED16-1")
    cfg = C.gemm_default(bm, C.QUANT_NONE, True, 90)
    db = REPO / "tuning/sm_90/fused_moe_gemm.json"
    if db.exists():
        for ent in json.loads(db.read_text())["entries"]:
            if ent["functional"] == fname and ent["bins"] == bins:
                cfg = ent["config"]
    return (bm, cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"], cfg["GROUP_SIZE_M"], cfg["num_warps"], cfg["num_stages"])


def plan_for(layer, M, gemm, spec, variants, smoke):
    """[(variant, kind, opts, cfg)] for one case."""
    out = []
    if not smoke:
        out.append(("prod", "prod", {}, tuned_prod_config(layer, M, gemm, spec)))
    for v in variants:
        kind, opts, cfgs = VARIANTS[v]
        if smoke and kind.startswith("gluon"):
            continue  # Gluon does not run under the interpreter (the CPU test compiles it for sm_90)
        for cfg in (SMOKE_CONFIGS if smoke else cfgs):
            out.append((v, kind, opts, cfg))
    return out


# ---------------------------------------------------------------- AOT and grouped_mm
def load_aot(prefix):
    sys.path.insert(0, str(Path(prefix) / "lib/python"))
    try:
        import aotriton
        return aotriton
    except Exception as e:  # noqa: BLE001 - the AOT columns stay empty
        print(f"no AOT aotriton ({type(e).__name__}: {e}); AOT columns skipped", flush=True)
        return None


def aot_fn(aotriton, case, block_m):
    s, e, n = aotriton.moe_align_block_size(case.ids, block_m, case.E)
    w = case.tw if case.mul else None
    return lambda: aotriton.invoke_fused_moe_kernel(case.a, case.b, case.c, w, s, e, n, case.top_k, block_m,
                                                    mul_routed_weight=case.mul)


def grouped_mm_fn(case):
    if not hasattr(torch, "_grouped_mm"):
        return None
    flat = case.ids.reshape(-1).long()
    order = flat.argsort(stable=True)
    offs = torch.bincount(flat, minlength=case.E).cumsum(0).to(torch.int32)
    a = case.a[order // case.top_k].contiguous()
    b = case.b.transpose(1, 2)
    return lambda: torch._grouped_mm(a, b, offs=offs)


# ---------------------------------------------------------------- main
def main(argv=None):
    # The time budget runs from here, not from import: a test that imports this
    # module at collection ran out of budget before its first case.
    global _T0
    _T0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="(always on: nothing is timed before it passes)")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny fp16 shapes, check only (TRITON_INTERPRET=1 on CPU)")
    ap.add_argument("--layers", default="mixtral,deepseek")
    ap.add_argument("--tokens", default=None, help="default 512,4096 (--smoke: 5,24)")
    ap.add_argument("--gemms", default="1,2")
    ap.add_argument("--routing", default="balanced")
    ap.add_argument("--variants", default="all")
    ap.add_argument("--extra-cases", default="mixtral:512:random",
                    help="layer:M:routing,... run after the main grid, both GEMMs (empty: none)")
    ap.add_argument("--warm-processes", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=150.0, help="no new case after this many seconds")
    ap.add_argument("--rep-ms", type=int, default=30)
    ap.add_argument("--prefix", default=str(REPO / "install"))
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    smoke = args.smoke
    device = "cpu" if smoke and os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    dtype = torch.float16 if smoke else torch.bfloat16
    num_sms = 4 if device == "cpu" else torch.cuda.get_device_properties(0).multi_processor_count
    layers = {"smoke": SMOKE_LAYER} if smoke else {n: LAYERS[n] for n in args.layers.split(",")}
    tokens = [int(t) for t in (args.tokens or ("5,24" if smoke else "512,4096")).split(",")]
    gemms = [int(g) for g in args.gemms.split(",")]
    routings = args.routing.split(",")
    meta = {"gpu": torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)",
            "torch": torch.__version__, "triton": triton.__version__, "num_sms": num_sms}
    aotriton = None if smoke or not args.bench else load_aot(args.prefix)
    rows, failures = [], 0

    def save():
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({**meta, "rows": rows, "check_failures": failures}, indent=1, default=str) + "\n"
            text = re.sub(r"\bNaN\b", "null", text)  # strict JSON: no measurement is null
            Path(args.json).write_text(text)
            if os.environ.get("OUT"):
                (Path(os.environ["OUT"]) / Path(args.json).name).write_text(text)

    # Weights once per (layer, GEMM), all kept (about 26 GB for both layers);
    # every case built up front so the compile jobs see the real launches.
    weights = {}
    for layer, spec in layers.items():
        for gemm in gemms:
            g = torch.Generator(device=device).manual_seed(gemm)
            n_out, k_in = (2 * spec["N"], spec["K"]) if gemm == 1 else (spec["K"], spec["N"])
            weights[(layer, gemm)] = (torch.randn(spec["E"], n_out, k_in, device=device, generator=g, dtype=dtype)
                                      / k_in ** 0.5)
    grid = [(layer, M, gemm, route) for layer in layers for gemm in gemms for M in tokens for route in routings]
    for item in ([] if smoke or not args.extra_cases else args.extra_cases.split(",")):
        layer, M, route = item.split(":")
        if layer in layers:
            grid += [(layer, int(M), gemm, route) for gemm in gemms if (layer, int(M), gemm, route) not in grid]
    cases = [Case(layer, layers[layer], M, gemm, route, weights[(layer, gemm)], dtype, device)
             for layer, M, gemm, route in grid]
    # 1. Compile every launch ahead in worker processes (Triton's disk cache;
    #    the launches below load from it).
    if args.warm_processes and device == "cuda":
        jobs = []
        for case in cases:
            for v, kind, opts, cfg in plan_for(case.layer, case.M, case.gemm, layers[case.layer], variants, smoke):
                jobs.append(((v, cfg_name(cfg)), _portable(kind, *launch_spec(kind, opts, cfg, case, num_sms)[1:])))
        for key, err in warm_all(jobs, args.warm_processes).items():
            print(f"compile error {key[0]} {key[1]}: {err}", flush=True)
    print(f"| layer | M | GEMM | routing | variant | config | TF/s | ms | x grouped_mm | x aot | rel err |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    timer = (lambda fn: triton.testing.do_bench(fn, warmup=5, rep=args.rep_ms, return_mode="median")) \
        if device == "cuda" else None
    for case in cases:
        layer, M, gemm, route, spec = case.layer, case.M, case.gemm, case.route, layers[case.layer]
        if time.time() - _T0 > args.budget_s:
            print(f"time budget {args.budget_s:.0f} s spent: skipping {layer} M={M} GEMM{gemm} {route}", flush=True)
            continue
        base = dict(layer=layer, M=M, gemm=gemm, routing=route, N=case.N, K=case.K, E=case.E)
        ref_ms, ref_cfg = {}, {}
        if args.bench and timer:
            try:
                gm = grouped_mm_fn(case)
                ref_ms["grouped_mm"] = timer(gm) if gm else float("nan")
            except RuntimeError as e:
                print(f"  torch._grouped_mm failed: {str(e).splitlines()[0][:200]}", flush=True)
            if aotriton is not None:
                bs = aotriton.moe_gemm_block_size(M)  # M alone: the block size before the tall-block rule
                for name, block_m in (("aot", bs), ("aot_bm128", 128)):
                    if name == "aot_bm128" and bs == 128:
                        continue
                    try:
                        fn = aot_fn(aotriton, case, block_m)
                        case.c.fill_(float("nan"))
                        ran = fn()  # the config the LUT picked
                        aot_err = case.error()
                        ref_ms[name] = timer(fn)
                    except Exception as e:  # noqa: BLE001 - e.g. a block size this build lacks
                        print(f"  {name} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                        continue
                    ref_cfg[name] = f"bm{block_m} " + (",".join(f"{k}={v}" for k, v in sorted(ran.items()))
                                                       if isinstance(ran, dict) else str(ran))
                    if not aot_err < TOL:
                        print(f"FAIL {layer} M={M} GEMM{gemm} {route} {name}: rel err {aot_err:.2e}", flush=True)
                        failures += 1
            for name, ms in ref_ms.items():
                tf = case.flops / ms / 1e9 if ms == ms else float("nan")
                rows.append(dict(base, variant=name, config=ref_cfg.get(name, ""), ms=round(ms, 5),
                                 tflops=round(tf, 1)))
                print(f"| {layer} | {M} | {gemm} | {route} | {name} | {ref_cfg.get(name, '')} | {tf:.1f} | "
                      f"{ms:.4f} | | | |", flush=True)
        gm_ms, aot_ms = ref_ms.get("grouped_mm", float("nan")), ref_ms.get("aot", float("nan"))
        for v, kind, opts, cfg in plan_for(layer, M, gemm, spec, variants, smoke):
            spec_l = launch_spec(kind, opts, cfg, case, num_sms)
            case.c.fill_(float("nan"))
            try:
                run(spec_l)
                err = case.error()
            except Exception as e:  # noqa: BLE001 - compile / launch failure: report, go on
                print(f"FAIL {layer} M={M} GEMM{gemm} {route} {v} {cfg_name(cfg)}: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''}", flush=True)
                failures += 1
                rows.append(dict(base, variant=v, config=cfg_name(cfg), error=type(e).__name__))
                continue
            ok = err < TOL
            failures += not ok
            row = dict(base, variant=v, config=cfg_name(cfg), rel_err=err, ok=ok)
            if not ok or not args.bench or timer is None:
                print(f"{'ok  ' if ok else 'FAIL'} {layer} M={M} GEMM{gemm} {route} {v} {cfg_name(cfg)}: "
                      f"rel err {err:.2e}", flush=True)
                rows.append(row)
                continue
            ms = timer(lambda: run(spec_l))
            tf = case.flops / ms / 1e9
            row.update(ms=round(ms, 5), tflops=round(tf, 1), x_grouped_mm=round(gm_ms / ms, 3),
                       x_aot=round(aot_ms / ms, 3))
            if opts.get("A_SORTED"):
                g_ms = timer(case.aligned(cfg[0])[4])
                row.update(gather_ms=round(g_ms, 5), tflops_with_gather=round(case.flops / (ms + g_ms) / 1e9, 1))
            rows.append(row)
            extra = f" (+gather {row['tflops_with_gather']:.1f})" if "gather_ms" in row else ""
            print(f"| {layer} | {M} | {gemm} | {route} | {v} | {cfg_name(cfg)} | {tf:.1f}{extra} | {ms:.4f} | "
                  f"{gm_ms / ms:.3f} | {aot_ms / ms:.3f} | {err:.1e} |", flush=True)
        save()
        case.drop()
    print(f"check: {failures} failures; {time.time() - _T0:.0f} s", flush=True)
    save()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
