"""Host-side checks of the issue-13 operators in C++ (what a C++ caller gets),
through the binding on a machine without a CUDA driver: bad input is refused
with a clear message before anything could launch (fake device pointers,
never dereferenced); good input gets as far as the missing driver."""
from nodriver import cases_without_driver

SCRIPT = r"""
I32, F16, F32 = C.DTYPE_INT32, C.DTYPE_FP16, C.DTYPE_FP32
v = view

logits, w, ids = v(4096, (4, 64), F16), v(1 << 20, (4, 2), F32), v(2 << 20, (4, 2), I32)
def gtk(G, TG, bias=None, scoring=1, w=w, ids=ids):
    return lambda: C.grouped_topk(logits, bias, w, ids, G, TG, scoring, True, 2.5, 0)
print("groups_not_dividing|" + outcome(gtk(3, 1)))
print("topk_group_too_big|" + outcome(gtk(8, 9)))
print("topk_too_big|" + outcome(gtk(8, 1, w=v(1 << 20, (4, 9), F32), ids=v(2 << 20, (4, 9), I32))))
print("bias_shape|" + outcome(gtk(8, 2, bias=v(3 << 20, (63,), F32))))
print("bias_dtype|" + outcome(gtk(8, 2, bias=v(3 << 20, (64,), F16))))
print("bias_groups_of_one|" + outcome(gtk(64, 2, bias=v(3 << 20, (64,), F32))))
print("scoring|" + outcome(gtk(8, 2, scoring=5)))
print("grouped_good|" + outcome(gtk(8, 2, bias=v(3 << 20, (64,), F32))))
x = v(4 << 20, (4, 32), F16)
print("activation_unknown|" + outcome(lambda: C.act_and_mul(v(5 << 20, (4, 16), F16), x, 7, 0)))
print("activation_swigluoai|" + outcome(lambda: C.act_and_mul(v(5 << 20, (4, 16), F16), x, 3, 0)))
fused = lambda topk, on_input: C.fused_experts(
    v(4096, (4, 16), F16), v(8192, (4, 32, 16), F16), v(12288, (4, 16, 16), F16), v(16384, (4, topk), F32),
    v(20480, (4, topk), I32), v(24576, (4, 16), F16), 0, 0, None, None, None, None, None, 0, 1 << 24, 1 << 20,
    0, None, on_input)
print("on_input_topk2|" + outcome(lambda: fused(2, True)))
print("fused_unknown_activation|" + outcome(lambda: C.fused_experts_workspace_size(
    v(4096, (4, 16), F16), v(8192, (4, 32, 16), F16), v(12288, (4, 16, 16), F16), v(16384, (4, 1), F32),
    v(20480, (4, 1), I32), v(24576, (4, 16), F16), 9, 0, None, None, None, None, None, 0)))
# top-k 2^32 and 2N 2^32 (views of independent tensors): their product wraps int64 to 0;
# sizing the passes of a large M divided by it (SIGFPE) before the checks saw the shapes.
T = 1 << 32
print("fused_width_overflow|" + outcome(lambda: C.fused_experts_workspace_size(
    v(1 << 40, (1, 1), F16), v(2 << 40, (1, T, 1), F16), v(3 << 40, (1, 1, T // 2), F16), v(4 << 40, (1, T), F32),
    v(5 << 40, (1, T), I32), v(6 << 40, (1, 1), F16), 0, 0, None, None, None, None, None, 0)))
print("fused_width_overflow_call|" + outcome(lambda: C.fused_experts(
    v(1 << 40, (1, 1), F16), v(2 << 40, (1, T, 1), F16), v(3 << 40, (1, 1, T // 2), F16), v(4 << 40, (1, T), F32),
    v(5 << 40, (1, T), I32), v(6 << 40, (1, 1), F16), 0, 0, None, None, None, None, None, 0, 1 << 44, 1 << 20, 0)))
ep_ids = v(4096, (4, 2), I32)
ep = lambda emap, L, inv=v(16384, (4, 2), I32): C.ep_dispatch(ep_ids, emap, L, v(8192, (8,), I32), inv,
                                                              v(24576, (L + 1,), I32), 1 << 24, 1 << 20, 0)
print("ep_short_map|" + outcome(lambda: ep(v(32768, (2,), I32), 4)))
print("ep_bad_inverse|" + outcome(lambda: ep(v(32768, (8,), I32), 4, v(16384, (4, 3), I32))))
print("ep_too_many_experts|" + outcome(lambda: ep(None, 600)))
print("ep_good|" + outcome(lambda: ep(v(32768, (8,), I32), 4)))
"""


def test_issue13_operator_checks_on_the_host(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    expect = {
        "groups_not_dividing": "num_expert_group = 3 must divide the number of experts 64",
        "topk_group_too_big": "topk_group = 9 must be in [1, num_expert_group = 8]",
        "topk_too_big": "topk = 9 must be in [1, 8]",
        "bias_shape": "e_score_correction_bias has 63 entries, expected one per expert (64)",
        "bias_dtype": "e_score_correction_bias",
        "bias_groups_of_one": "groups need at least 2 experts",
        "scoring": "unknown scoring 5",
        "activation_unknown": "unknown activation 7",
        "on_input_topk2": "apply_router_weight_on_input needs top-k = 1",
        "fused_unknown_activation": "unknown activation 9",
        "ep_short_map": "expert_map has 2 entries",
        "ep_bad_inverse": "inverse has shape",
        "fused_width_overflow": "tokens * top-k * max(2N, K) overflows 64-bit integers",
        "fused_width_overflow_call": "tokens * top-k * max(2N, K) overflows 64-bit integers",
    }
    for case, msg in expect.items():
        assert out[case].startswith("ValueError") and msg in out[case], (case, out[case])
    assert out["ep_too_many_experts"].startswith("ValueError") and "num_local_experts = 600" in out[
        "ep_too_many_experts"], out
    # Good input passes every check and stops at the missing driver.
    for case in ("grouped_good", "activation_swigluoai", "ep_good"):
        assert out[case].startswith("RuntimeError: CUDA driver not available"), (case, out[case])
