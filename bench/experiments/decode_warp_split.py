"""Decode with per-warp keys (JIT experiment; issue 12 item 7, small batches).

The production decode kernel (tritonsrc/flash/decode.py) lets the warps of a
CTA share each key tile, so every tile pays two cross-warp reductions (row max,
row sum) and a shared-memory round trip for P: 35-58 CTA barriers per kernel
in the sm_90 SASS, a dependent chain per tile that short splits (<= 1024 keys)
cannot amortize. Here a tile is [WARPS, KEYS_PER_WARP] keys and the math is a
batched tl.dot over the warp dimension, so each warp keeps its own (m, l, acc)
and the reductions stay inside it; the warps combine once at the end.

Scope: contiguous cache [B, S, Hk, D], one query token per sequence, GQA group
<= 16 rows, split-KV with the partial layout of the production combine kernel
(O_part + (s * rows + r) * D, LSE_part + s * rows + r, rows = B * Hq, natural-log
LSE), so `python bench/experiments/decode_warp_split.py` can time this split
kernel against the production one (both kernel-only, CUDA-graph replay) and
check the combined output against SDPA in float32.
"""
import argparse
import sys
from pathlib import Path

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def decode_warp_split(Q, K, V, O_part, LSE_part, seqlen_k, num_heads_k, num_splits, sm_scale,
                      stride_qb, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
                      GROUP: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, WARPS: tl.constexpr,
                      KEYS_PER_WARP: tl.constexpr):
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads_k
    hk = bh % num_heads_k
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < GROUP
    heads = hk * GROUP + rows
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    q3 = tl.broadcast_to(q[None, :, :], (WARPS, BLOCK_M, D))
    tile = WARPS * KEYS_PER_WARP
    chunk = tl.cdiv(tl.cdiv(seqlen_k, num_splits), tile) * tile
    lo = split * chunk
    hi = tl.minimum(lo + chunk, seqlen_k)
    offs_w = tl.arange(0, WARPS)
    offs_j = tl.arange(0, KEYS_PER_WARP)
    k_head = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_head = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([WARPS, BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([WARPS, BLOCK_M], tl.float32)
    acc = tl.zeros([WARPS, BLOCK_M, D], tl.float32)
    for start in tl.range(lo, hi, tile):
        cols = start + offs_w[:, None] * KEYS_PER_WARP + offs_j[None, :]  # [WARPS, KEYS_PER_WARP]
        ok = cols < hi
        # Rows of D contiguous elements (16-byte loads), transposed for the dot.
        k = tl.load(k_head + cols[:, :, None].to(tl.int64) * stride_kn + offs_d[None, None, :],
                    mask=ok[:, :, None], other=0.0)  # [WARPS, KEYS_PER_WARP, D]
        s = tl.dot(q3, tl.trans(k, (0, 2, 1))) * qk_scale
        s = tl.where(ok[:, None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 2))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, :, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 2)
        acc = acc * alpha[:, :, None]
        v = tl.load(v_head + cols[:, :, None].to(tl.int64) * stride_vn + offs_d[None, None, :],
                    mask=ok[:, :, None], other=0.0)  # [WARPS, KEYS_PER_WARP, D]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    # The warps' states, combined once.
    m = tl.max(m_i, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    f = tl.math.exp2(m_i - m_use[None, :])
    l_sum = tl.sum(l_i * f, 0)
    o = tl.sum(acc * f[:, :, None], 0) / tl.where(l_sum > 0, l_sum, 1.0)[:, None]
    lse = tl.where(l_sum > 0, (m_use + tl.math.log2(l_sum)) * LN2, float("-inf"))
    r = (b * num_heads_k * GROUP + heads).to(tl.int64)
    total_rows = (tl.num_programs(1) * GROUP).to(tl.int64)
    tl.store(O_part + (split * total_rows + r)[:, None] * D + offs_d[None, :], o, mask=row_ok[:, None])
    tl.store(LSE_part + split * total_rows + r, lse, mask=row_ok)


def launch(q, k_cache, v_cache, o_part, lse_part, num_splits, warps=4, keys_per_warp=16, num_stages=3):
    """q [B, Hq, D]; caches [B, S, Hk, D] (all keys valid); partials fp32 [splits, B*Hq, D] and [splits, B*Hq]."""
    B, Hq, D = q.shape
    Hk = k_cache.shape[2]
    group = Hq // Hk
    assert group <= 16 and q.stride(-1) == 1 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1
    decode_warp_split[(num_splits, B * Hk)](
        q, k_cache, v_cache, o_part, lse_part, k_cache.shape[1], Hk, num_splits, D ** -0.5,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        GROUP=group, D=D, BLOCK_M=16, WARPS=warps, KEYS_PER_WARP=keys_per_warp, num_warps=warps,
        num_stages=num_stages)


def combine(o_part, lse_part):
    """Reference combine of the partials (torch, float32): [B*Hq, D]."""
    import torch
    lse = torch.logsumexp(lse_part, 0)
    w = torch.exp(lse_part - lse[None])
    return (o_part * w[..., None]).sum(0)


def tuned_config(repo, keys_per_split):
    """The sm_90 database's contiguous bf16 D-128 decode config for this keys-per-split bin (or the default)."""
    import json
    from tritonsrc.flash.decode_configs import DECODE_KEYS_PER_SPLIT_BINS
    path = repo / "tuning/sm_90/attn_decode.json"
    b = next(i for i, hi in enumerate(DECODE_KEYS_PER_SPLIT_BINS) if keys_per_split <= hi)
    for e in json.loads(path.read_text())["entries"] if path.exists() else []:
        if e["functional"] == "dtype-bf16__BLOCK_DMODEL-128__PAGED-0__SCORE_MOD-0" and e["bins"] == [b]:
            return e["config"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--contexts", default="1024,8192,32768")
    ap.add_argument("--splits", default="8,32,66")
    ap.add_argument("--variants", default="4x16,4x32,8x16", help="warps x keys per warp")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(repo)]
    import torch

    from python import tune_shared as T
    from python.jit.flash_decode import decode_launch_args
    from python.jit_launch import kernel_function
    from python import rules_flash
    torch.manual_seed(0)
    Hq, Hk, D = 32, 4, 128
    bw = T.copy_bandwidth(torch, triton)
    print(f"GPU {torch.cuda.get_device_name()}, triton {triton.__version__}, copy bandwidth {bw / 1e9:.0f} GB/s")
    print("| B | context | splits | production kernel us | " + " | ".join(f"{v} us" for v in args.variants.split(","))
          + " | best roofline | max rel err |")
    print("|" + "---|" * (5 + len(args.variants.split(","))))
    for B in map(int, args.batches.split(",")):
        for S in map(int, args.contexts.split(",")):
            q = torch.randn(B, 1, Hq, D, device="cuda", dtype=torch.bfloat16)
            kc = torch.randn(B, S, Hk, D, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn(B, S, Hk, D, device="cuda", dtype=torch.bfloat16)
            ref = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2).float(), kc.transpose(1, 2).float(), vc.transpose(1, 2).float(),
                enable_gqa=True).transpose(1, 2).reshape(B * Hq, D)
            kv_bytes = 2 * kc.numel() * kc.element_size()
            for splits in map(int, args.splits.split(",")):
                cs = torch.full((B,), S, device="cuda", dtype=torch.int32)
                grid, pargs, kwargs = decode_launch_args(q, kc, vc, cs, sm_scale=D ** -0.5, num_splits=splits,
                                                         config=tuned_config(repo, -(-S // splits)))
                fn = kernel_function(rules_flash.attn_decode)
                prod_us = 1e3 * T.kernel_ms(lambda: fn[grid](*pargs, **kwargs), 25)
                times, err = [], 0.0
                for var in args.variants.split(","):
                    warps, kpw = map(int, var.split("x"))
                    o_part = torch.empty(splits, B * Hq, D, device="cuda", dtype=torch.float32)
                    lse_part = torch.empty(splits, B * Hq, device="cuda", dtype=torch.float32)
                    run = lambda: launch(q.view(B, Hq, D), kc, vc, o_part, lse_part, splits, warps, kpw)  # noqa: E731
                    run()
                    out = combine(o_part, lse_part)
                    err = max(err, ((out - ref).norm() / ref.norm()).item())
                    times.append(1e3 * T.kernel_ms(run, 25))
                best = min(times)
                roof = kv_bytes / bw * 1e6 / best
                print(f"| {B} | {S} | {splits} | {prod_us:.1f} | " + " | ".join(f"{t:.1f}" for t in times)
                      + f" | {roof:.2f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
