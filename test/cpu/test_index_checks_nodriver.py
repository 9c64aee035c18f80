"""Host-side index checks of the operators, through the Python binding on a
machine without a CUDA driver: refused with a clear message before anything
could launch (fake device pointers, never dereferenced)."""
from nodriver import cases_without_driver

SCRIPT = r"""
I32, F16, F32 = C.DTYPE_INT32, C.DTYPE_FP16, C.DTYPE_FP32
v = view

ids = v(4096, (4, 2), I32)
align = lambda emap: C.moe_align_block_size(ids, 4, 16, emap, v(8192, (68,), I32), v(12288, (5,), I32),
                                            v(16384, (1,), I32), 0, 0, 0)
print("align_short_map|" + outcome(lambda: align(v(20480, (3,), I32))))
print("align_strided_map|" + outcome(lambda: align((20480, (8,), (2,), I32))))
print("align_good_map|" + outcome(lambda: align(v(20480, (8,), I32))))
fused = lambda emap: C.fused_experts_workspace_size(
    v(4096, (4, 16), F16), v(8192, (4, 32, 16), F16), v(12288, (4, 16, 16), F16), v(16384, (4, 2), F32),
    v(20480, (4, 2), I32), v(24576, (4, 16), F16), 0, 0, None, None, None, None, emap, 0)
print("fused_short_map|" + outcome(lambda: fused(v(28672, (3,), I32))))
print("fused_good_map|" + outcome(lambda: fused(v(28672, (6,), I32))))
"""


def test_expert_map_length_is_checked_on_the_host(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    for case in ("align_short_map", "fused_short_map"):
        assert out[case].startswith("ValueError: invalid argument") and "expert_map has 3 entries" in out[case], out
    assert out["align_strided_map"].startswith("ValueError") and "contiguous" in out["align_strided_map"], out
    # A long enough map passes the checks: the call gets as far as the missing driver / returns a size.
    assert out["align_good_map"].startswith("RuntimeError: CUDA driver not available"), out
    assert out["fused_good_map"].startswith("ok "), out
