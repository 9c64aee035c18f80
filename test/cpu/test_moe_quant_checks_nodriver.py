"""Host-side checks of the MoE quantization modes (fp8 per channel, int8 w8a16,
int4 w4a16) in the C++ API, through the Python binding on a machine without a
CUDA driver: bad inputs are refused with a message naming the problem before
anything could launch (fake device pointers, never dereferenced)."""
from nodriver import cases_without_driver

SCRIPT = r"""
I32, F16, F32, U8, I8, F8 = C.DTYPE_INT32, C.DTYPE_FP16, C.DTYPE_FP32, C.DTYPE_UINT8, C.DTYPE_INT8, C.DTYPE_FP8E4M3
CHANNEL, INT8, INT4 = 3, 4, 5
v = fresh

M, E, K, N, TOPK = 4, 4, 128, 64, 2

def fused(quant, K=K, N=N, w1=None, w2=None, s1=None, s2=None, z1=None, z2=None, group=0):
    return C.fused_experts_quant_workspace_size(
        v((M, K), F16), w1, w2, v((M, TOPK), F32), v((M, TOPK), I32), v((M, K), F16), 0, quant, s1, s2, z1, z2,
        group, None, 0)

def int4(K=K, N=N, group=64, s1=None, z1=None, z2=None, w1=None):
    return fused(INT4, K, N, w1 or v((E, 2 * N, K // 2), U8), v((E, K, N // 2), U8),
                 s1 or v((E, 2 * N, K // group), F32), v((E, K, N // group), F32), z1, z2, group)

def chan(quant, K=K, w1_dtype=None, s2=None):
    wd = F8 if quant == CHANNEL else I8
    return fused(quant, K, N, v((E, 2 * N, K), w1_dtype or wd), v((E, K, N), wd), v((E, 2 * N, 1), F32),
                 s2 or v((E, K, 1), F32))

cases = {
    "int4_good": lambda: int4(),
    "int4_good_zp": lambda: int4(z1=v((E, N, K // 64), U8), z2=v((E, K // 2, N // 64), U8)),
    "int4_odd_k": lambda: int4(K=127, w1=v((E, 2 * N, 63), U8), s1=v((E, 2 * N, 1), F32)),
    "int4_group_96": lambda: int4(group=96),
    "int4_group_not_dividing": lambda: int4(K=192, group=128),
    "int4_scale_shape": lambda: int4(s1=v((E, 2 * N, 3), F32)),
    "int4_zp_shape": lambda: int4(z1=v((E, 2 * N, K // 64), U8), z2=v((E, K // 2, N // 64), U8)),
    "int4_one_zp": lambda: int4(z1=v((E, N, K // 64), U8)),
    "int4_packed_size": lambda: int4(w1=v((E, 2 * N, K), U8)),
    "channel_good": lambda: chan(CHANNEL),
    "int8_good": lambda: chan(INT8),
    "int8_unaligned": lambda: chan(INT8, K=200),
    "int8_wrong_dtype": lambda: chan(INT8, w1_dtype=U8),
    "channel_scale_shape": lambda: chan(CHANNEL, s2=v((E, K, 2), F32)),
    "channel_static_a_scale": lambda: C.fused_experts_workspace_size(
        v((M, K), F16), v((E, 2 * N, K), F8), v((E, K, N), F8), v((M, TOPK), F32), v((M, TOPK), I32),
        v((M, K), F16), 0, CHANNEL, v((E, 2 * N, 1), F32), v((E, K, 1), F32), v((1,), F32), None, None, 0),
    # An fp8 output whose rows share memory (row stride 0): the rows are written in parallel.
    "group_q_rows_alias": lambda: C.per_token_group_quant_fp8(
        v((M, K), F16), (1 << 52, (M, K), (0, 1), F8), v((M, 1), F32), 128, 0),
    "token_q_rows_alias": lambda: C.per_token_quant_fp8(v((M, K), F16), (1 << 52, (M, K), (0, 1), F8),
                                                        v((M, 1), F32), 0),
    "tensor_q_rows_alias": lambda: C.per_tensor_quant_fp8(v((M, K), F16), (1 << 52, (M, K), (0, 1), F8),
                                                          v((1,), F32), False, 0, 0, 0),
    "tensor_q_good": lambda: C.per_tensor_quant_fp8(v((M, K), F16), v((M, K), F8), v((1,), F32), False, 0, 0, 0),
    # fp8 per-tensor scales may have any shape of numel 1 (or E), but not negative sizes
    # (numel [-1, -1] is 1): they once passed, and the overlap check saw them as empty.
    "gemm_per_tensor_negative_scale": lambda: C.grouped_gemm(
        v((M, K), F8), v((E, N, K), F8), v((M * TOPK, N), F16), (1 << 52, (-1, -1), (-1, 1), F32),
        v((E, 1, 1), F32), None, v((80,), I32), v((5,), I32), v((1,), I32), TOPK, 16, False, 1, 0),
    "fused_per_tensor_negative_scale": lambda: C.fused_experts_workspace_size(
        v((M, K), F16), v((E, 2 * N, K), F8), v((E, K, N), F8), v((M, TOPK), F32), v((M, TOPK), I32), v((M, K), F16),
        0, 1, (1 << 52, (-1, -E, 1), (-E, 1, 1), F32), v((E, 1, 1), F32), None, None, None, 0),
    "fused_per_tensor_good": lambda: C.fused_experts_workspace_size(
        v((M, K), F16), v((E, 2 * N, K), F8), v((E, K, N), F8), v((M, TOPK), F32), v((M, TOPK), I32), v((M, K), F16),
        0, 1, v((E, 1, 1), F32), (1 << 53, (1, 1, 1), (1, 1, 1), F32), None, None, None, 0),
}
for name, fn in cases.items():
    print(name + "|" + outcome(fn))
"""

EXPECT = {  # case -> text the error must contain ("ok": a workspace size comes back)
    "int4_good": "ok", "int4_good_zp": "ok", "channel_good": "ok", "int8_good": "ok",
    "int4_odd_k": "the hidden size (GEMM1 K) = 127 is odd",
    "int4_group_96": "group_size = 96 must be a positive multiple of 64",
    "int4_group_not_dividing": "group_size = 128 does not divide the hidden size (GEMM1 K) = 192",
    "int4_scale_shape": "w1_scale has shape [4, 128, 3], expected [4, 128, 2]",
    "int4_zp_shape": "w1_zp has shape [4, 128, 2], expected [4, 64, 2]",
    "int4_one_zp": "w1_zp and w2_zp must be given together",
    "int4_packed_size": "w1.size(2) = 128 but the hidden size is 128 (packed int4",
    "int8_unaligned": "multiples of 16",
    "int8_wrong_dtype": "w1 is uint8, expected int8",
    "channel_scale_shape": "w2_scale has shape [4, 128, 2], expected [4, 128, 1]",
    "channel_static_a_scale": "a1_scale / a2_scale must be absent with fp8 per-channel",
    "group_q_rows_alias": "per_token_group_quant_fp8: output q has elements that share memory",
    "token_q_rows_alias": "per_token_quant_fp8: output q has elements that share memory",
    "tensor_q_rows_alias": "per_tensor_quant_fp8: output q has elements that share memory",
    "tensor_q_good": "CUDA driver not available",  # valid: past every check
    "gemm_per_tensor_negative_scale": "grouped_gemm: a_scale has a negative size [-1, -1]",
    "fused_per_tensor_negative_scale": "fused_experts: w1_scale has a negative size [-1, -4, 1]",
    "fused_per_tensor_good": "ok",
}


def test_quant_mode_checks_on_the_host(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    assert set(out) == set(EXPECT)
    for case, want in EXPECT.items():
        if want == "ok":
            assert out[case].startswith("ok ") and int(out[case].split()[1]) > 0, (case, out[case])
        elif want == "CUDA driver not available":
            assert out[case].startswith("RuntimeError: " + want), (case, out[case])
        else:
            assert out[case].startswith(("ValueError", "RuntimeError")) and want in out[case], (case, out[case])
