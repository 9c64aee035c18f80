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

"""


def test_int32_sums_and_products_are_checked(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    refused = {
        # dq_accum
        "bwd_dq_accum_rows_past_int32": "attn_bwd: dq_accum rows * row stride = 2147483712 exceeds the int32 range",
    }
    passed = [
        "bwd_dq_accum_like_q",
    ]
    assert sorted(out) == sorted([*refused, *passed]), sorted(out)
    for case, text in refused.items():
        assert out[case].startswith("ValueError: unsupported") and text in out[case], (case, out[case])
    for case in passed:
        assert out[case].startswith(PASSED), (case, out[case])
