"""attn_fwd / attn_bwd host-side checks of the attention features, through
the Python binding on a machine without a CUDA driver (fake device pointers,
never dereferenced): bad input is refused with a message naming it before
anything could launch; good input gets as far as the missing driver."""
from nodriver import cases_without_driver

SCRIPT = r"""
F16, F32 = C.DTYPE_FP16, C.DTYPE_FP32
v = fresh

# Many short sequences with one slope per (sequence, head): the kernels add
# batch * stride(0) + head in int32, so (B - 1) * stride(0) must stay below 2^31.
B, S, H, D = 70000, 1, 1, 64
FAR = 1 << 52  # the hand-made strided view, apart from every fresh() buffer
far_slopes = (FAR, (B, H), (40000, 1), F32)  # rows of a wider table: 69999 * 40000 > 2^31
q, k, vv, out, dout = (v((B, S, H, D), F16) for _ in range(5))
lse, delta = v((B, H, S), F32), v((B, H, S), F32)
dq, dk, dv = (v((B, S, H, D), F16) for _ in range(3))

def fwd(slopes):
    return lambda: C.attn_fwd(q, k, vv, out, lse, 0.125, 0, 0.0, 0, 0, None, 0, alibi_slopes=slopes)

def bwd(slopes):
    return lambda: C.attn_bwd(q, k, vv, out, dout, lse, dq, dk, dv, delta, 0.125, 0, 0.0, 0, 0, 0,
                              alibi_slopes=slopes)

print("fwd_alibi_offset_past_int32|" + outcome(fwd(far_slopes)))
print("bwd_alibi_offset_past_int32|" + outcome(bwd(far_slopes)))
print("fwd_alibi_good|" + outcome(fwd(v((B, H), F32))))
print("bwd_alibi_good|" + outcome(bwd(v((B, H), F32))))
print("fwd_alibi_one_row|" + outcome(fwd((FAR, (1, H), (1 << 40, 1), F32))))  # size(0) 1: stride(0) unused
"""


def test_alibi_batch_offset_is_checked(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    for case, op in (("fwd_alibi_offset_past_int32", "attn_fwd"), ("bwd_alibi_offset_past_int32", "attn_bwd")):
        assert out[case].startswith("ValueError: unsupported") and (
            op + ": alibi_slopes offset, (batch - 1) * stride(0) + num_heads_q (69999 * 40000 + 1)") in out[case], (
                case, out[case])
    for case in ("fwd_alibi_good", "bwd_alibi_good", "fwd_alibi_one_row"):
        assert out[case].startswith("RuntimeError: CUDA driver not available"), (case, out[case])
