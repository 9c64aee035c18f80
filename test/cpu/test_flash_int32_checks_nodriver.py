"""attn_fwd / attn_bwd (batched and varlen): sizes and strides each within
int32 whose sums or products, formed in int32 inside the flash kernels, are
not; through the Python binding on a machine without a CUDA driver (fake
device pointers, never dereferenced). Such calls are refused with
kUnsupported naming the quantity; the same calls just inside the range pass
every host check."""
from nodriver import cases_without_driver

# Past every host check: the missing driver, or (head dim 1 runs the unaligned
# head-dim-16 kernel, which the ci profile does not build) the kernel lookup.
PASSED = ("RuntimeError: CUDA driver not available", "RuntimeError: not in this build")

SCRIPT = r"""
F16, F32 = C.DTYPE_FP16, C.DTYPE_FP32
v = fresh


def restride(t, strides):
    return (t[0], t[1], tuple(strides), t[3])


# --- dq_accum with strides of its own: bwd_preprocess (zeroing it) and
# bwd_dq_convert add row * stride(1) + column in int32. q, dq in [B, H, S, D]
# memory order (row stride 64) fit; a dq_accum in [B, S, H, D] order has row
# stride H * D = 2048 and 2^20 rows: 2^31. (One sequence: z strides unused, 0.)
B, S, H, D = 1, 1 << 20, 32, 64
bhsd, bshd = (0, D, S * D, 1), (0, H * D, D, 1)
q, k, vv, out, dout, dq, dk, dv = (restride(v((B, S, H, D), F16), bhsd) for _ in range(8))
lse, delta = v((B, H, S), F32), v((B, H, S), F32)


def bwd_accum(accum):
    return lambda: C.attn_bwd(q, k, vv, out, dout, lse, dq, dk, dv, delta, 0.125, 0, 0.0, 0, 0, 0, dq_accum=accum)


print("bwd_dq_accum_rows_past_int32|" + outcome(bwd_accum(restride(v((B, S, H, D), F32), bshd))))
print("bwd_dq_accum_like_q|" + outcome(bwd_accum(restride(v((B, S, H, D), F32), bhsd))))

# --- A sequence within one block of 2^31: the key loop
# `for start_n in range(lo, hi, BLOCK_N)` steps its int32 index past 2^31 - 1
# and wraps (the loop would not end). K and V broadcast one row (stride 0).
LONG = (1 << 31) - 1


def long_fwd(sk):
    q, out = v((1, 1, 1, 64), F16), v((1, 1, 1, 64), F16)
    k, vv = (restride(v((1, 1, 1, 64), F16), (64, 0, 64, 1)) for _ in range(2))
    k, vv = ((t[0], (1, sk, 1, 64), t[2], t[3]) for t in (k, vv))
    return outcome(lambda: C.attn_fwd(q, k, vv, out, v((1, 1, 1), F32), 0.125, 0, 0.0, 0, 0, None, 0))


def long_fwd_varlen(sk):
    q, out = v((1, 1, 64), F16), v((1, 1, 64), F16)
    k, vv = ((t[0], (sk, 1, 64), (0, 64, 1), t[3]) for t in (v((1, 1, 64), F16), v((1, 1, 64), F16)))
    cu = v((2,), C.DTYPE_INT32)[0]
    return outcome(lambda: C.attn_fwd_varlen(q, k, vv, out, v((1, 1), F32), cu, cu, 1, 1, sk, 0.125, 0, 0.0, 0, 0,
                                             None, 0))


def long_bwd(sk):
    # head dim 1, dk / dv one element per key: (sk - 1) * 1 + 1 fits int32.
    q, out, dout, dq = (v((1, 1, 1, 1), F16) for _ in range(4))
    k, vv, dk, dv = (v((1, sk, 1, 1), F16) for _ in range(4))
    lse, delta = v((1, 1, 1), F32), v((1, 1, 1), F32)
    return outcome(lambda: C.attn_bwd(q, k, vv, out, dout, lse, dq, dk, dv, delta, 0.5, 0, 0.0, 0, 0, 0))


print("fwd_seqlen_k_within_a_block|" + long_fwd(LONG))
print("fwd_varlen_seqlen_k_within_a_block|" + long_fwd_varlen(LONG))
print("bwd_seqlen_k_within_a_block|" + long_bwd(LONG - 1))
print("fwd_seqlen_k_fits|" + long_fwd((1 << 31) - 1024))
print("bwd_seqlen_k_fits|" + long_bwd((1 << 31) - 1024))

# --- The band (sliding window, softcap, ALiBi): its key offsets reach
# max_seqlen_q + max_seqlen_k in int32 (attn_mods.band_key_range's
# last + hi_off + 1 with an unbounded right edge, band_row_blocks'
# last - lo_off + 1 with an unbounded left one): at 2^30 + 1 each, the
# later query blocks would see no key and the later keys get dK = dV = 0.
def band_fwd(s, **feat):
    q, k, vv, out = (v((1, s, 1, 1), F16) for _ in range(4))
    return outcome(lambda: C.attn_fwd(q, k, vv, out, v((1, 1, s), F32), 0.5, 0, 0.0, 0, 0, None, 0, **feat))


def band_fwd_varlen(s, **feat):
    q, k, vv, out = (v((s, 1, 1), F16) for _ in range(4))
    cu = v((2,), C.DTYPE_INT32)[0]
    return outcome(lambda: C.attn_fwd_varlen(q, k, vv, out, v((1, s), F32), cu, cu, 1, s, s, 0.5, 0, 0.0, 0, 0,
                                             None, 0, **feat))


def band_bwd(s, causal, **feat):
    q, k, vv, out, dout, dq, dk, dv = (v((1, s, 1, 1), F16) for _ in range(8))
    lse, delta = v((1, 1, s), F32), v((1, 1, s), F32)
    return outcome(lambda: C.attn_bwd(q, k, vv, out, dout, lse, dq, dk, dv, delta, 0.5, causal, 0.0, 0, 0, 0,
                                      **feat))


BIG, FITS = (1 << 30) + 1, (1 << 30) - 1
print("fwd_window_past_int32|" + band_fwd(BIG, window_left=8))
print("fwd_varlen_window_past_int32|" + band_fwd_varlen(BIG, window_left=8))
print("bwd_softcap_causal_past_int32|" + band_bwd(BIG, 1, softcap=30.0))
print("fwd_window_fits|" + band_fwd(FITS, window_left=8))
print("bwd_softcap_causal_fits|" + band_bwd(FITS, 1, softcap=30.0))
print("fwd_no_band_big|" + band_fwd(BIG))  # no band: no sum formed

# --- GQA in the backward: the dK/dV kernels loop over
# group * cdiv(seqlen_q, BLOCK_M) steps in int32 (bwd_dkdv.py
# `tl.range(0, group * nblk)`): 8192 query heads on one kv head and 2^24
# rows are 2^31 steps even at BLOCK_M 64 (the loop would run none: dK = dV = 0).
def gqa_bwd(hq, sq):
    sk = 64
    bhsd_q = (0, 1, sq, 1)  # [B, H, S, D] order, head dim 1: row stride 1 (one sequence: z stride unused)
    q, out, dout, dq = (restride(v((1, sq, hq, 1), F16), bhsd_q) for _ in range(4))
    k, vv, dk, dv = (v((1, sk, 1, 1), F16) for _ in range(4))
    lse, delta = (restride(v((1, hq, sq), F32), (0, sq, 1)) for _ in range(2))
    return outcome(lambda: C.attn_bwd(q, k, vv, out, dout, lse, dq, dk, dv, delta, 0.5, 0, 0.0, 0, 0, 0))


print("bwd_gqa_steps_past_int32|" + gqa_bwd(8192, 1 << 24))
print("bwd_gqa_steps_fit|" + gqa_bwd(8192, 1 << 21))

# --- The sm_90 persistent forward numbers its cdiv(Sq, 128) * B * Hq tiles in
# int32 (fwd_hopper_persistent.py `total`): 2^20 sequences x 2^10 heads x 2
# query blocks is 2^31. Not served by it (a forced config of it is refused).
PERSISTENT = "BLOCK_M=128,BLOCK_N=128,NUM_STAGES=3,RESCALE_TH=0,SCHEDULE=4,maxnreg=0,num_warps=4"


def persistent_fwd(b):
    h, s, d = 1 << 10, 256, 128
    bshd = (s * h * d, h * d, d, 1)
    q, k, vv, out = ((((1 << 52) + i * (1 << 48)), (b, s, h, d), bshd, F16) for i in range(4))
    lse = ((1 << 52) + 4 * (1 << 48), (b, h, s), (h * s, s, 1), F32)
    return outcome(lambda: C.attn_fwd(q, k, vv, out, lse, 0.125, 0, 0.0, 0, 0, None, 0, force_config=PERSISTENT))


print("fwd_hopper_tiles_past_int32|" + persistent_fwd(1 << 20))
print("fwd_hopper_tiles_fit|" + persistent_fwd(1 << 19))
"""


def test_int32_sums_and_products_are_checked(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    refused = {
        # dq_accum
        "bwd_dq_accum_rows_past_int32": "attn_bwd: dq_accum rows * row stride = 2147483712 exceeds the int32 range",
        # one block short of 2^31
        "fwd_seqlen_k_within_a_block": "attn_fwd: max_seqlen_k = 2147483647 exceeds 2147482624 (2^31 - 1024)",
        "fwd_varlen_seqlen_k_within_a_block": "attn_fwd_varlen: max_seqlen_k = 2147483647 exceeds 2147482624",
        "bwd_seqlen_k_within_a_block": "attn_bwd: max_seqlen_k = 2147483646 exceeds 2147482624",
        # the band
        "fwd_window_past_int32": "attn_fwd: max_seqlen_q + max_seqlen_k (the int32 key offsets of sliding window, "
                                 "softcap or ALiBi) = 2147483650 exceeds the int32 range",
        "fwd_varlen_window_past_int32": "attn_fwd_varlen: max_seqlen_q + max_seqlen_k (",
        "bwd_softcap_causal_past_int32": "attn_bwd: max_seqlen_q + max_seqlen_k (",
        # GQA steps of dK/dV
        "bwd_gqa_steps_past_int32": "attn_bwd: num_heads_q / num_heads_k * cdiv(max_seqlen_q, 16) (the int32 step "
                                    "count of the dK/dV kernels' loop over a kv head's query heads and row blocks) "
                                    "= 8589934592 exceeds the int32 range",
    }
    passed = [
        "bwd_dq_accum_like_q",
        "fwd_seqlen_k_fits", "bwd_seqlen_k_fits",
        "fwd_window_fits", "bwd_softcap_causal_fits", "fwd_no_band_big",
        "bwd_gqa_steps_fit",
        "fwd_hopper_tiles_fit",
    ]
    assert sorted(out) == sorted([*refused, *passed, "fwd_hopper_tiles_past_int32"]), sorted(out)
    # The forced persistent config no longer serves the call (kInvalidArgument, as for any forced
    # config of a kernel that does not serve it); unforced, attn_fwd takes it.
    tiles = out["fwd_hopper_tiles_past_int32"]
    assert tiles.startswith("ValueError: invalid argument") and (
        "attn_fwd: force_config names an attn_fwd_hopper config" in tiles
        and "at most 2^31 - 1 (128-row query block, batch x head) tiles" in tiles), tiles
    for case, text in refused.items():
        assert out[case].startswith("ValueError: unsupported") and text in out[case], (case, out[case])
    for case in passed:
        assert out[case].startswith(PASSED), (case, out[case])
