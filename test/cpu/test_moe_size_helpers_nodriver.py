"""The MoE size helpers of the C++ API take raw integers (no Status to return):
they must never overflow. moe_align_max_padded is exact in range, 0 for negative
arguments and saturates at INT64_MAX; the workspace sizes are 0 for sizes no call
accepts; moe_gemm_block_size stays a valid block size for any input."""
from nodriver import cases_without_driver

SCRIPT = r"""
cases = {
    "padded_exact": lambda: C.moe_align_max_padded(1000, 8, 16),
    "padded_negative": lambda: C.moe_align_max_padded(-5, 8, 16),
    "padded_saturates": lambda: C.moe_align_max_padded(2 ** 62, 2 ** 53, 1024),
    "align_ws_large": lambda: C.moe_align_workspace_size(2 ** 31, 8),
    "align_ws_negative": lambda: C.moe_align_workspace_size(4096, -1),
    "align_ws_ok": lambda: C.moe_align_workspace_size(4096, 8),
    "ep_ws_large": lambda: C.ep_dispatch_workspace_size(2 ** 40, 2 ** 40),
    "ep_ws_ok": lambda: C.ep_dispatch_workspace_size(4096, 8),
    "block_huge": lambda: C.moe_gemm_block_size(2 ** 62, True),
}
for name, fn in cases.items():
    print(name + "|" + outcome(fn))
"""


def test_size_helpers_never_overflow(prefix):
    out = {k: v.split() for k, v in cases_without_driver(prefix, SCRIPT).items()}
    assert all(v[0] == "ok" for v in out.values()), out
    val = {k: int(v[1]) for k, v in out.items()}
    assert val["padded_exact"] == 1000 + 8 * 15
    assert val["padded_negative"] == 0
    assert val["padded_saturates"] == 2 ** 63 - 1
    assert val["align_ws_large"] == 0 and val["align_ws_negative"] == 0 and val["align_ws_ok"] > 0
    assert val["ep_ws_large"] == 0 and val["ep_ws_ok"] > 0
    assert val["block_huge"] in (16, 32, 64, 128)
