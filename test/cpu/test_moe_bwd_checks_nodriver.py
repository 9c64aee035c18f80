"""fused_experts_backward's host-side checks through the binding, without a CUDA
driver: every bad argument is refused with a message naming it before anything
could launch (fake device pointers, never dereferenced)."""
from nodriver import cases_without_driver

SCRIPT = r"""
I32, F16, F32 = C.DTYPE_INT32, C.DTYPE_FP16, C.DTYPE_FP32
v = view

M, K, N, E, TOPK = 4, 16, 16, 4, 2
GOOD = dict(dout=v(4096, (M, K), F16), x=v(8192, (M, K), F16), w1=v(12288, (E, 2 * N, K), F16),
            w2=v(16384, (E, K, N), F16), w=v(20480, (M, TOPK), F32), ids=v(24576, (M, TOPK), I32),
            dx=v(28672, (M, K), F16), dw1=v(32768, (E, 2 * N, K), F16), dw2=v(49152, (E, K, N), F16),
            dw=v(65536, (M, TOPK), F32))

def size(**bad):
    a = {**GOOD, **bad}
    return C.fused_experts_backward_workspace_size(a["dout"], a["x"], a["w1"], a["w2"], a["w"], a["ids"], 0, a["dx"],
                                                   a["dw1"], a["dw2"], a["dw"])

print("good|" + outcome(size))
print("dw1_shape|" + outcome(lambda: size(dw1=v(32768, (E, N, K), F16))))
print("fp32_hidden|" + outcome(lambda: size(x=v(8192, (M, K), F32))))
print("dtw_strided|" + outcome(lambda: size(dw=v(65536, (M, TOPK), F32, (TOPK + 1, 1)))))
print("ids_dtype|" + outcome(lambda: size(ids=v(24576, (M, TOPK), F32))))
print("dout_rows|" + outcome(lambda: size(dout=v(4096, (M + 1, K), F16))))
# w2 rows of a wider buffer (row stride 2^28): row K - 1 is past the int32 offsets the GEMMs step with.
print("w2_rows_past_int32|" + outcome(lambda: size(w2=v(1 << 52, (E, K, N), F16, (16, 1 << 28, 1)))))
# swigluoai (activation 3) has a forward only: refused as unsupported, not as an unknown activation.
print("swigluoai|" + outcome(lambda: C.fused_experts_backward_workspace_size(
    GOOD["dout"], GOOD["x"], GOOD["w1"], GOOD["w2"], GOOD["w"], GOOD["ids"], 3, GOOD["dx"], GOOD["dw1"], GOOD["dw2"],
    GOOD["dw"])))
a = GOOD
run = lambda ws, nbytes: C.fused_experts_backward(a["dout"], a["x"], a["w1"], a["w2"], a["w"], a["ids"], 0, a["dx"],
                                                  a["dw1"], a["dw2"], a["dw"], ws, nbytes, 0)
print("small_workspace|" + outcome(lambda: run(1 << 20, 16)))
print("overlap|" + outcome(lambda: C.fused_experts_backward(a["dout"], a["x"], a["w1"], a["w2"], a["w"], a["ids"], 0,
                                                            a["x"], a["dw1"], a["dw2"], a["dw"], 1 << 20, 1 << 20, 0)))
print("launch|" + outcome(lambda: run(1 << 20, 1 << 20)))
"""


def test_backward_arguments_are_checked_on_the_host(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    assert out["good"].startswith("ok ") and int(out["good"].split()[1]) > 0, out
    for case, words in (("dw1_shape", "grad_w1 has shape"), ("fp32_hidden", "fp16 or bf16"),
                        ("dtw_strided", "grad_topk_weights must be contiguous"), ("ids_dtype", "topk_ids"),
                        ("dout_rows", "grad_output has shape"), ("small_workspace", "workspace"),
                        ("w2_rows_past_int32", "w2 offset within an expert, (K - 1) * w2.stride(1) + N"),
                        ("overlap", "grad_hidden_states")):
        assert out[case].startswith("ValueError") and words in out[case], (case, out[case])
    assert "swigluoai activation has no backward" in out["swigluoai"], out["swigluoai"]
    # Valid arguments get as far as the missing driver.
    assert out["launch"].startswith("RuntimeError: CUDA driver not available"), out
