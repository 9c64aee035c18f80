"""The torch layer without a GPU: custom-op registration and schemas, drop-in
signatures, errors for missing features and bad devices, and the fake
implementations (FakeTensorMode makes fake CUDA tensors on a CPU-only torch).
Under fake tensors every public function must go through torch.ops.aotriton
(what torch.compile and torch.export trace) and never reach the extension."""
import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch_op_helpers import RecordOps, fail_on_launch, graph_recording_backend

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
F16, BF16, F32, I32 = torch.float16, torch.bfloat16, torch.float32, torch.int32

OPS = {  # op -> arguments it mutates
    "attn_fwd": set(), "attn_fwd_varlen": set(), "attn_bwd": set(), "attn_bwd_varlen": set(),
    "act_and_mul": {"out"}, "moe_sum": {"out"}, "topk_softmax": {"topk_weights", "topk_ids"},
    "moe_align_block_size": {"sorted_token_ids", "expert_ids", "num_tokens_post_padded", "workspace"},
    "grouped_gemm": {"C"}, "per_token_group_quant_fp8": {"q", "scales"}, "per_tensor_quant_fp8": {"q", "scale"},
    "fused_experts": {"out", "workspace"},
    "grouped_topk": {"topk_weights", "topk_ids"},
    "ep_dispatch": {"sorted_token_ids", "inverse", "expert_offsets", "workspace"},
}


@pytest.fixture
def no_extension_launch(monkeypatch):
    """Every eager launch into pyaotriton fails the test, and so does any call the
    torch C++ fast path would serve (it must hand fake tensors back: NotImplemented)."""
    from aotriton import _flash_launch, _moe_launch, _simple_op, _torch_fast
    fail_on_launch(monkeypatch, _flash_launch, ("_attn_fwd", "_attn_fwd_varlen", "_attn_bwd", "_attn_bwd_varlen"))
    fail_on_launch(monkeypatch, _moe_launch, ("_act_and_mul",))
    monkeypatch.setattr(_moe_launch, "_C", None)
    monkeypatch.setattr(_simple_op, "_C", None)
    for name in ("attn_fwd_plain", "act_and_mul_plain"):
        fast = getattr(_torch_fast, name)
        if fast is not None:
            monkeypatch.setattr(_torch_fast, name, _only_declines(fast, name))


def _only_declines(fast, name):
    def call(*args):
        got = fast(*args)
        assert got is NotImplemented, f"the torch C++ fast path ({name}) served a call it must decline"
        return got
    return call


def fake_mode():
    return FakeTensorMode()


def rnd(*shape, dtype=F16, device="cuda"):
    return torch.randn(*shape, device=device).to(dtype)


# --- registration -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_registered_with_mutation_annotations(name):
    schema = getattr(torch.ops.aotriton, name).default._schema
    written = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    assert written == OPS[name], str(schema)
    if not OPS[name]:
        assert len(schema.returns) == 3  # out, lse, mask / dq, dk, dv
    else:
        assert len(schema.returns) == 0


def test_load_all_configs_binding_round_trips():
    import pyaotriton

    assert pyaotriton.load_all_configs() is False
    pyaotriton.set_load_all_configs(True)
    try:
        assert pyaotriton.load_all_configs() is True
    finally:
        pyaotriton.set_load_all_configs(False)
    assert "dtypes" in inspect.signature(aotriton.preload).parameters


# --- drop-in signatures -------------------------------------------------------------------------
FLASH_ATTN_2 = [("dropout_p", 0.0), ("softmax_scale", None), ("causal", False), ("window_size", (-1, -1)),
                ("softcap", 0.0), ("alibi_slopes", None), ("deterministic", False), ("return_attn_probs", False)]


def _positional_defaults(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty]


def test_flash_attn_signatures_match_flash_attn_2():
    assert _positional_defaults(aotriton.flash_attn_func) == FLASH_ATTN_2
    assert _positional_defaults(aotriton.flash_attn_varlen_func) == FLASH_ATTN_2 + [("block_table", None)]
    names = list(inspect.signature(aotriton.flash_attn_varlen_func).parameters)[:7]
    assert names == ["q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"]


def test_sdpa_signature_matches_torch():
    params = inspect.signature(aotriton.scaled_dot_product_attention).parameters
    assert [(p.name, p.default) for p in params.values()][3:] == [
        ("attn_mask", None), ("dropout_p", 0.0), ("is_causal", False), ("scale", None), ("enable_gqa", False)]


def test_vllm_keywords_accepted():
    fe = inspect.signature(aotriton.fused_experts).parameters
    for name in ("inplace", "activation", "apply_router_weight_on_input", "use_fp8_w8a8", "use_int8_w8a8",
                 "use_int8_w8a16", "use_int4_w4a16", "per_channel_quant", "global_num_experts", "expert_map",
                 "w1_scale", "w2_scale", "w1_zp", "w2_zp", "a1_scale", "a2_scale", "block_shape"):
        assert name in fe, name
    fm = inspect.signature(aotriton.fused_moe).parameters
    for name in ("inplace", "activation", "use_grouped_topk", "num_expert_group", "topk_group",
                 "custom_routing_function", "global_num_experts", "expert_map", "use_fp8_w8a8", "block_shape"):
        assert name in fm, name
    assert list(fe)[:5] == ["hidden_states", "w1", "w2", "topk_weights", "topk_ids"]
    assert list(fm)[:6] == ["hidden_states", "w1", "w2", "gating_output", "topk", "renormalize"]


# --- missing features and bad input -------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(window_size=(-2, 0)), "window_size"), (dict(window_size=(3, -5)), "window_size"),
    (dict(window_size=7), "window_size"), (dict(softcap=-1.0), "softcap"), (dict(softcap=float("nan")), "softcap"),
    (dict(alibi_slopes="slopes"), "alibi_slopes"), (dict(alibi_slopes=torch.ones(2)), "alibi_slopes.*device"),
    (dict(alibi_slopes=3), "alibi_slopes"), (dict(softcap=30.0, alibi_slopes=True), "combined"),
    (dict(window_size=(4, 0), dropout_p=0.1), "dropout")])
def test_flash_feature_bad_values_raise(kwargs, message, no_extension_launch):
    with fake_mode():
        q, p = rnd(1, 8, 2, 64), rnd(8, 2, 64)
        if kwargs.get("alibi_slopes") is True:
            kwargs = dict(kwargs, alibi_slopes=torch.ones(2, device="cuda"))
        with pytest.raises(ValueError, match=message):
            aotriton.flash_attn_func(q, q, q, **kwargs)
        cu = torch.tensor([0, 8], dtype=I32, device="cuda")
        with pytest.raises(ValueError, match=message):
            aotriton.flash_attn_varlen_func(p, p, p, cu, cu, 8, 8, **kwargs)


@pytest.mark.parametrize("slopes,message", [
    ((3,), "shape"), ((2, 2), "shape"), ((1, 2, 2), "shape"), ("fp16", "float32")])
def test_flash_alibi_slopes_checked(slopes, message, no_extension_launch):
    with fake_mode():
        q = rnd(1, 8, 2, 64)
        s = torch.ones(2, device="cuda", dtype=F16) if slopes == "fp16" else torch.ones(*slopes, device="cuda")
        with pytest.raises(ValueError, match=message):
            aotriton.flash_attn_func(q, q, q, alibi_slopes=s)
        with pytest.raises(ValueError, match=message):
            out, lse, _ = aotriton.flash_attn_func(q, q, q, return_attn_probs=True)
            aotriton.flash_attn_backward(out, q, q, q, out, lse, alibi_slopes=s)


def test_flash_features_need_16_bit(no_extension_launch):
    with fake_mode():
        q = rnd(1, 8, 2, 64, dtype=F32)
        with pytest.raises(ValueError, match="fp16 or bf16"):
            aotriton.flash_attn_func(q, q, q, softcap=30.0)


def test_flash_feature_fake_outputs(no_extension_launch):
    """Window / softcap / ALiBi calls trace through the ops (forward and backward) with fake outputs."""
    with fake_mode(), RecordOps() as rec:
        q, k = rnd(2, 9, 4, 64), rnd(2, 7, 2, 64)
        slopes, head_slopes = torch.rand(2, 4, device="cuda"), torch.rand(4, device="cuda")
        for kw in (dict(window_size=(3, 0)), dict(softcap=30.0), dict(alibi_slopes=slopes),
                   dict(alibi_slopes=head_slopes, window_size=(2, 2))):
            out = aotriton.flash_attn_func(q, k, k, causal=True, **kw)
            assert out.shape == q.shape
            out, lse, _ = aotriton.flash_attn_func(q, k, k, return_attn_probs=True, **kw)
            dq, dk, dv = aotriton.flash_attn_backward(out, q, k, k, out, lse, **kw)
            assert dq.shape == q.shape and dk.shape == k.shape
        cu = torch.tensor([0, 5, 9], dtype=I32, device="cuda")
        out = aotriton.flash_attn_varlen_func(rnd(9, 4, 64), rnd(9, 2, 64), rnd(9, 2, 64), cu, cu, 5, 5,
                                              window_size=(1, 1), alibi_slopes=slopes)
        assert out.shape == (9, 4, 64)
    assert rec.ops.count("aotriton.attn_fwd") >= 8 and "aotriton.attn_bwd" in rec.ops
    assert "aotriton.attn_fwd_varlen" in rec.ops


def test_flash_default_valued_keywords_run(no_extension_launch):
    with fake_mode():
        q, p = rnd(1, 8, 2, 64), rnd(8, 2, 64)
        out = aotriton.flash_attn_func(q, q, q, 0.0, None, True, [-1, -1], 0.0, None, True, False)
        assert out.shape == q.shape
        cu = torch.tensor([0, 8], dtype=I32, device="cuda")
        out = aotriton.flash_attn_varlen_func(p, p, p, cu, cu, 8, 8, window_size=(-1, -1), softcap=0.0,
                                              alibi_slopes=None, deterministic=True, block_table=None)
        assert out.shape == p.shape
        with pytest.raises(NotImplementedError, match="block_table"):
            aotriton.flash_attn_varlen_func(p, p, p, cu, cu, 8, 8, block_table=cu)


def test_sdpa_attn_mask_raises(no_extension_launch):
    with fake_mode():
        q = rnd(1, 2, 8, 64)
        with pytest.raises(NotImplementedError, match="attn_mask"):
            aotriton.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(8, 8, dtype=torch.bool,
                                                                                  device="cuda"))
        with pytest.raises(ValueError, match="enable_gqa"):
            aotriton.scaled_dot_product_attention(q, rnd(1, 1, 8, 64), rnd(1, 1, 8, 64))


def _moe_args(M=3, E=4, N=32, K=64, topk=2, dtype=BF16):
    return (rnd(M, K, dtype=dtype), rnd(E, 2 * N, K, dtype=dtype), rnd(E, K, N, dtype=dtype),
            rnd(M, topk, dtype=F32), torch.zeros(M, topk, dtype=I32, device="cuda"))


@pytest.mark.parametrize("kwargs,feature", [
    # int8 w8a16, int4 w4a16 and fp8 per channel are supported: test_moe_quant_ops.py.
    (dict(use_int8_w8a8=True), "use_int8_w8a8"), (dict(use_mxfp4_w4a4=True), "use_mxfp4_w4a4"),
    (dict(w1_zp="zp"), "zero points"),
    (dict(activation="silu_no_mul"), "silu_no_mul"), (dict(quant_config=object()), "quant_config"),
    (dict(w1_bias="b"), "bias"), (dict(use_fp8_w8a8=True, block_shape=[64, 64]), "block_shape")])
def test_fused_experts_missing_features_raise(kwargs, feature, no_extension_launch):
    with fake_mode():
        with pytest.raises(NotImplementedError, match=feature):
            aotriton.fused_experts(*_moe_args(), **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(per_channel_quant=True), "per_channel_quant=True needs use_fp8_w8a8=True"),
    (dict(use_fp8_w8a8=True, per_channel_quant=True, block_shape=[128, 128]),
     "per_channel_quant=True and block_shape are exclusive"),
    (dict(use_fp8_w8a8=True, use_int8_w8a16=True), "are exclusive")])
def test_fused_experts_quant_flag_misuse_raises_value_error(kwargs, match, no_extension_launch):
    """Supported quant modes asked for inconsistently: ValueError naming the flag, not NotImplementedError."""
    with fake_mode():
        with pytest.raises(ValueError, match=match):
            aotriton.fused_experts(*_moe_args(), **kwargs)


def test_fused_moe_grouped_topk_traces(no_extension_launch):
    with fake_mode(), RecordOps() as rec:
        x, w1, w2, _, _ = _moe_args()
        out = aotriton.fused_moe(x, w1, w2, rnd(3, 4), 2, True, use_grouped_topk=True, num_expert_group=2,
                                 topk_group=1, scoring_func="sigmoid", e_score_correction_bias=rnd(4, dtype=F32),
                                 routed_scaling_factor=2.5)
        assert out.shape == x.shape
        assert "aotriton.grouped_topk" in rec.ops and "aotriton.topk_softmax" not in rec.ops
        aotriton.fused_moe(x, w1, w2, rnd(3, 4), 2, True, scoring_func="sigmoid")  # plain sigmoid top-k
        assert rec.ops.count("aotriton.grouped_topk") == 2
        aotriton.fused_moe(x, w1, w2, rnd(3, 4), 1, True, apply_router_weight_on_input=True)
        aotriton.fused_experts(x, w1, w2, rnd(3, 2, dtype=F32), torch.zeros(3, 2, dtype=I32, device="cuda"),
                               activation="swigluoai")


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_expert_group=3, topk_group=1), "num_expert_group=3 must divide the number of experts 8"),
    (dict(num_expert_group=4, topk_group=5), "topk_group=5 must be in \\[1, num_expert_group=4\\]"),
    (dict(num_expert_group=4, topk_group=1, topk=3), "topk=3 must be in \\[1, 2\\]"),
    (dict(num_expert_group=2, topk_group=1, bias_len=7),
     "e_score_correction_bias must have shape \\(8,\\)"),
    (dict(scoring_func="tanh"), "scoring_func must be 'softmax' or 'sigmoid'"),
])
def test_grouped_topk_bad_input_raises(kwargs, match, no_extension_launch):
    with fake_mode():
        kw = dict(num_expert_group=1, topk_group=1, topk=2)
        kw.update(kwargs)
        topk = kw.pop("topk")
        n = kw.pop("bias_len", None)
        bias = None if n is None else rnd(n, dtype=F32)
        with pytest.raises(ValueError, match=match):
            aotriton.grouped_topk(None, rnd(5, 8), topk, True, e_score_correction_bias=bias, **kw)


def test_moe_routing_coverage_errors(no_extension_launch):
    with fake_mode():
        x, w1, w2, w, ids = _moe_args(topk=2)
        with pytest.raises(ValueError, match="apply_router_weight_on_input needs topk == 1"):
            aotriton.fused_experts(x, w1, w2, w, ids, apply_router_weight_on_input=True)
        with pytest.raises(ValueError, match="activation must be one of"):
            aotriton.fused_experts(x, w1, w2, w, ids, activation="geglu")
        with pytest.raises(ValueError, match="use_grouped_topk=True needs num_expert_group and topk_group"):
            aotriton.fused_moe(x, w1, w2, rnd(3, 4), 2, True, use_grouped_topk=True)
        with pytest.raises(ValueError, match="alpha=1.702, limit=7.0 only"):
            aotriton.swigluoai_and_mul(rnd(3, 8), alpha=1.0)
        with pytest.raises(ValueError, match="num_local_experts=0 must be in"):
            aotriton.ep_dispatch(ids, None, 0)
        with pytest.raises(ValueError, match="expert_map must be a 1-D int32"):
            aotriton.ep_dispatch(ids, torch.zeros(4, dtype=torch.int64, device="cuda"), 2)


def test_routing_coverage_fake_outputs(no_extension_launch):
    with fake_mode(), RecordOps() as rec:
        w, ids = aotriton.grouped_topk(None, rnd(5, 256, dtype=BF16), 8, True, 8, 4, "sigmoid", 2.5,
                                       rnd(256, dtype=F32))
        assert (w.shape, w.dtype, ids.shape, ids.dtype) == ((5, 8), F32, (5, 8), I32)
        w, ids = aotriton.fused_topk(None, rnd(5, 16), 3, False, scoring_func="sigmoid")
        assert ids.shape == (5, 3)
        s, inv, off = aotriton.ep_dispatch(ids, torch.zeros(16, dtype=I32, device="cuda"), 4)
        assert (s.shape, inv.shape, off.shape) == ((15,), (5, 3), (5,))
        assert aotriton.swigluoai_and_mul(rnd(5, 64)).shape == (5, 32)
    for op in ("grouped_topk", "ep_dispatch", "act_and_mul"):
        assert f"aotriton.{op}" in rec.ops, op


def test_fused_experts_bad_keywords(no_extension_launch):
    with fake_mode():
        args = _moe_args()
        with pytest.raises(ValueError, match="activation"):
            aotriton.fused_experts(*args, activation="relu")
        with pytest.raises(ValueError, match="global_num_experts"):
            aotriton.fused_experts(*args, global_num_experts=8)
        with pytest.raises(ValueError, match="topk == 1"):
            aotriton.fused_experts(*args, apply_router_weight_on_input=True)
        with pytest.raises(ValueError, match="inplace"):
            aotriton.fused_experts(*args, inplace=True, out=torch.empty_like(args[0]))


def test_cpu_tensors_rejected_before_launch(no_extension_launch):
    q = torch.randn(1, 8, 2, 64, dtype=F16)
    with pytest.raises(ValueError, match="q must be a CUDA tensor"):
        aotriton.flash_attn_func(q, q, q)
    with pytest.raises(ValueError, match="input must be a CUDA tensor"):
        aotriton.silu_and_mul(torch.randn(4, 64, dtype=F16))
    with fake_mode():
        q = rnd(1, 8, 2, 64)
        with pytest.raises(TypeError, match="k must be a torch.Tensor"):
            aotriton.flash_attn_func(q, "k", q)


def test_device_mismatch_names_tensors(no_extension_launch):
    with fake_mode():
        q0, q1 = rnd(1, 8, 2, 64, device="cuda:0"), rnd(1, 8, 2, 64, device="cuda:1")
        p0 = rnd(8, 2, 64, device="cuda:0")
        with pytest.raises(ValueError, match="v is on cuda:1 but q is on cuda:0"):
            aotriton.flash_attn_func(q0, q0, q1)
        with pytest.raises(ValueError, match="key is on cuda:1"):
            aotriton.scaled_dot_product_attention(q0, q1, q0)
        cu0, cu1 = (torch.tensor([0, 8], dtype=I32, device=d) for d in ("cuda:0", "cuda:1"))
        with pytest.raises(ValueError, match="cu_seqlens_k is on cuda:1"):
            aotriton.flash_attn_varlen_func(p0, p0, p0, cu0, cu1, 8, 8)
        with pytest.raises(ValueError, match="philox offset is on cuda:1"):
            aotriton.flash_attn_func(q0, q0, q0, 0.1, philox=(torch.zeros(1, dtype=torch.int64, device="cuda:0"),
                                                              torch.zeros(1, dtype=torch.int64, device="cuda:1")))
        with pytest.raises(ValueError, match="philox seed must be an int64"):
            aotriton.flash_attn_func(q0, q0, q0, 0.1, philox=(torch.zeros(1, dtype=I32, device="cuda:0"),
                                                              torch.zeros(1, dtype=torch.int64, device="cuda:0")))
        with pytest.raises(ValueError, match="philox"):
            aotriton.flash_attn_func(q0, q0, q0, 0.1, philox=torch.zeros(2, dtype=torch.int64, device="cuda:0"))
        x0 = rnd(4, 64, device="cuda:0")
        with pytest.raises(ValueError, match="out is on cuda:1"):
            aotriton.silu_and_mul(x0, rnd(4, 32, device="cuda:1"))
        x, w1, w2, w, ids = _moe_args()
        with pytest.raises(ValueError, match="w2 is on cuda:1"):
            aotriton.fused_experts(x, w1, rnd(*w2.shape, dtype=BF16, device="cuda:1"), w, ids)
        with pytest.raises(ValueError, match="expert_map is on cuda:1"):
            aotriton.fused_experts(x, w1, w2, w, ids, expert_map=torch.zeros(4, dtype=I32, device="cuda:1"))
        with pytest.raises(ValueError, match="topk_ids is on cuda:1"):
            aotriton.moe_align_block_size(torch.zeros(3, 2, dtype=I32, device="cuda:1"), 16, 4,
                                          torch.zeros(4, dtype=I32, device="cuda:0"))


def test_moe_refuses_gradients_after_device_checks(no_extension_launch):
    x = torch.randn(4, 64, dtype=F16, requires_grad=True)
    with pytest.raises(ValueError, match="CUDA"):  # (the gradient refusal itself is tested on the GPU)
        aotriton.silu_and_mul(x)


# --- fake implementations: shapes, dtypes, strides; traced calls go through the ops --------------
def test_flash_fake_outputs(no_extension_launch):
    with fake_mode(), RecordOps() as rec:
        q = rnd(2, 9, 4, 64)
        k = rnd(2, 7, 2, 64)
        out = aotriton.flash_attn_func(q, k, k, causal=True)
        assert out.shape == q.shape and out.stride() == q.stride() and out.dtype == F16
        out, lse, probs = aotriton.flash_attn_func(q, k, k, return_attn_probs=True)
        assert lse.shape == (2, 4, 9) and lse.dtype == F32 and probs is None
        out, lse, probs = aotriton.flash_attn_func(q, k, k, 0.1, return_attn_probs=True)
        assert probs.shape == (2, 4, 9, 7) and probs.dtype == torch.int8
        out, lse, philox = aotriton.flash_attn_func(q, k, k, 0.1, return_lse=True)
        assert philox[0].dtype == torch.int64 and philox[0].device == q.device
        # (B, H, S, D) storage keeps its layout, as torch.empty_like does on the GPU
        qt = rnd(2, 4, 9, 64).transpose(1, 2)
        assert aotriton.flash_attn_func(qt, qt, qt).stride() == qt.stride()
        o = aotriton.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), k.transpose(1, 2),
                                                  is_causal=True, enable_gqa=True)
        assert o.shape == (2, 4, 9, 64) and o.stride() == q.transpose(1, 2).stride()  # the layout of query
        cu_q = torch.tensor([0, 5, 9], dtype=I32, device="cuda")
        cu_k = torch.tensor([0, 3, 7], dtype=I32, device="cuda")
        out, lse, probs = aotriton.flash_attn_varlen_func(rnd(9, 4, 64), rnd(7, 2, 64), rnd(7, 2, 64), cu_q, cu_k,
                                                          5, 4, 0.2, return_attn_probs=True)
        assert out.shape == (9, 4, 64) and lse.shape == (4, 9) and probs.shape == (2, 4, 5, 4)
        out, lse, _ = aotriton.flash_attn_func(q, k, k, return_attn_probs=True)
        dq, dk, dv = aotriton.flash_attn_backward(out, q, k, k, out, lse)
        assert dq.shape == q.shape and dk.shape == dv.shape == k.shape
    assert "aotriton.attn_fwd" in rec.ops and "aotriton.attn_fwd_varlen" in rec.ops
    assert "aotriton.attn_bwd" in rec.ops


def test_flash_op_fake_impl_directly():
    with fake_mode():
        q, k = rnd(2, 9, 4, 64), rnd(2, 7, 2, 64)
        seed = torch.zeros(1, dtype=torch.int64, device="cuda")
        out, lse, mask = torch.ops.aotriton.attn_fwd(q, k, k, seed, seed, 0.125, 2, 0.1, True, None)
        assert (out.shape, lse.shape, mask.shape) == (q.shape, (2, 4, 9), (2, 4, 9, 7))
        out, lse, mask = torch.ops.aotriton.attn_fwd(q, k, k, None, None, 0.125, 0, 0.0, False, None)
        assert mask.numel() == 0
        dq, dk, dv = torch.ops.aotriton.attn_bwd(out, q, k, k, out, lse, None, None, 0.125, 0, 0.0, None)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.stride() == k.stride()


def test_moe_fake_outputs(no_extension_launch):
    import pyaotriton

    with fake_mode(), RecordOps() as rec:
        x = rnd(5, 64, dtype=BF16)
        assert aotriton.silu_and_mul(x).shape == (5, 32)
        assert aotriton.gelu_and_mul(x, approximate="tanh").dtype == BF16
        assert aotriton.moe_sum(rnd(5, 2, 64)).shape == (5, 64)
        w, ids = aotriton.topk_softmax(rnd(5, 8), 2, True)
        assert (w.shape, w.dtype, ids.dtype) == ((5, 2), F32, I32)
        s, e, n = aotriton.moe_align_block_size(ids, 16, 8)
        assert s.shape[0] == pyaotriton.moe_align_max_padded(10, 8, 16) and e.shape[0] == -(-s.shape[0] // 16)
        assert n.shape == (1,)
        args = _moe_args()
        out = aotriton.fused_experts(*args)
        assert out.shape == args[0].shape and out.dtype == BF16
        assert aotriton.fused_experts(*args, inplace=True) is args[0]
        assert aotriton.fused_moe(args[0], args[1], args[2], rnd(3, 4), 2, True).shape == (3, 64)
        routed = []

        def route(hidden_states, gating_output, topk, renormalize):
            routed.append(topk)
            return torch.ones(3, topk, device="cuda"), torch.zeros(3, topk, dtype=torch.int64, device="cuda")
        aotriton.fused_moe(args[0], args[1], args[2], rnd(3, 4), 1, True, custom_routing_function=route)
        assert routed == [1]
        q8, sc = aotriton.per_token_group_quant_fp8(rnd(3, 200))
        assert q8.dtype == torch.float8_e4m3fn and sc.shape == (3, 2)
        q8, sc = aotriton.per_tensor_quant_fp8(rnd(3, 200))
        assert q8.shape == (3, 200) and sc.shape == (1,)
    for op in ("act_and_mul", "moe_sum", "topk_softmax", "moe_align_block_size", "fused_experts",
               "per_token_group_quant_fp8", "per_tensor_quant_fp8"):
        assert f"aotriton.{op}" in rec.ops, op


def test_moe_fake_impl_checks_shapes():
    with fake_mode():
        x = rnd(5, 64)
        with pytest.raises(ValueError, match="out must have shape"):
            torch.ops.aotriton.act_and_mul(rnd(5, 31), x, 0, None)


# --- autograd wiring on the CPU: the extension replaced by a float64 reference --------------------
def _ref_attention(q, k, v, scale, causal):
    """float64 attention over (B, S, H, D) with GQA; causal 0 none, 1 top-left, 2 bottom-right."""
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    rep = qd.shape[1] // kd.shape[1]
    kd, vd = kd.repeat_interleave(rep, 1), vd.repeat_interleave(rep, 1)
    s = qd @ kd.transpose(-1, -2) * scale
    if causal:
        sq, sk = s.shape[-2:]
        i, j = torch.arange(sq)[:, None], torch.arange(sk)[None, :]
        s = s.masked_fill(j > i + (0 if causal == 1 else sk - sq), float("-inf"))
    lse = torch.logsumexp(s, -1)
    return (torch.softmax(s, -1) @ vd).transpose(1, 2), lse


def _ref_attention_grads(q, k, v, dout, scale, causal):
    """dq, dk, dv of _ref_attention, written out: P = softmax(S), dS = P * (dO V^T - rowsum(dO * O))."""
    B, Sq, Hq, D = q.shape
    Hk = k.shape[2]
    qd, kd, vd, do = (t.double().transpose(1, 2) for t in (q, k, v, dout))
    kd, vd = kd.repeat_interleave(Hq // Hk, 1), vd.repeat_interleave(Hq // Hk, 1)
    out, lse = _ref_attention(q, k, v, scale, causal)
    p = torch.exp(qd @ kd.transpose(-1, -2) * scale - lse[..., None]).nan_to_num(0.0)
    if causal:
        sk = kd.shape[2]
        i, j = torch.arange(Sq)[:, None], torch.arange(sk)[None, :]
        p = p.masked_fill(j > i + (0 if causal == 1 else sk - Sq), 0.0)
    ds = p * (do @ vd.transpose(-1, -2) - (do * out.transpose(1, 2)).sum(-1, keepdim=True))
    dq = ds @ kd * scale
    dk = (ds.transpose(-1, -2) @ qd * scale).view(B, Hk, Hq // Hk, -1, D).sum(2)
    dv = (p.transpose(-1, -2) @ do).view(B, Hk, Hq // Hk, -1, D).sum(2)
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


@pytest.fixture
def reference_extension(monkeypatch):
    """The eager launches computed by _ref_attention on CPU tensors (and the CUDA check relaxed),
    so the autograd wiring of both routes runs here."""
    from aotriton import _flash_launch, flash

    calls = []

    def fwd(q, k, v, seed, offset, scale, causal, dropout_p, return_mask, force_config, varlen, feat=None):
        assert varlen is None and dropout_p == 0
        calls.append("fwd" if feat is None else ("fwd", feat[:3], feat[3] is not None))
        out, lse, mask = _flash_launch.fwd_outputs(q, k, return_mask, varlen)
        ref, ref_lse = _ref_attention(q, k, v, scale, causal) if feat is None else \
            _ref_features(q, k, v, scale, causal, feat)
        out.copy_(ref.detach())
        lse.copy_(ref_lse.detach())
        return out, lse, mask

    def bwd(dout, q, k, v, out, lse, seed, offset, scale, causal, dropout_p, force_config, varlen, feat=None,
            deterministic=True):
        calls.append("bwd" if feat is None else ("bwd", feat[:3], feat[3] is not None))
        if feat is None:
            grads = _ref_attention_grads(q, k, v, dout, scale, causal)  # analytic: ops run below autograd
        else:
            grads = _ref_features_grads(q, k, v, dout, scale, causal, feat)
        return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))

    monkeypatch.setattr(_flash_launch, "fwd", fwd)
    monkeypatch.setattr(_flash_launch, "bwd", bwd)
    monkeypatch.setattr(flash, "_check_qkv", lambda *args: None)
    return calls


def _ref_features(q, k, v, scale, causal, feat):
    """feature_ref.attention on [B, S, H, D] tensors with a feat tuple; (out, lse) float64."""
    from feature_ref import attention

    left, right, softcap, slopes = feat
    rep = q.shape[2] // k.shape[2]
    outs, lses = [], []
    for b in range(q.shape[0]):
        qd, kd, vd = (t[b].double().transpose(0, 1) for t in (q, k, v))
        sl = None if slopes is None else slopes[b if slopes.shape[0] > 1 else 0].double()
        o, lse = attention(qd, kd.repeat_interleave(rep, 0), vd.repeat_interleave(rep, 0), scale, causal,
                           (left, right), softcap, sl)
        outs.append(o.transpose(0, 1))
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)


def _ref_features_grads(q, k, v, dout, scale, causal, feat):
    """dq, dk, dv of _ref_features, written out (the ops run below autograd):
    dS = P * (dO V^T - rowsum(dO * O)), times 1 - tanh^2 with softcap."""
    from feature_ref import scores, visible

    left, right, softcap, slopes = feat
    B, Sq, Hq, D = q.shape
    Hk, Sk = k.shape[2], k.shape[1]
    out, lse = _ref_features(q, k, v, scale, causal, feat)
    grads = []
    for b in range(B):
        qd, kd, vd, do, od = (t[b].double().transpose(0, 1) for t in (q, k, v, dout, out))
        kd, vd = kd.repeat_interleave(Hq // Hk, 0), vd.repeat_interleave(Hq // Hk, 0)
        sl = None if slopes is None else slopes[b if slopes.shape[0] > 1 else 0].double()
        s = scores(qd, kd, scale, softcap, sl)
        p = torch.exp(s - lse[b][..., None]).masked_fill(~visible(Sq, Sk, causal, (left, right)), 0.0)
        ds = p * (do @ vd.transpose(-1, -2) - (do * od).sum(-1, keepdim=True))
        if softcap > 0:
            ds = ds * (1 - torch.tanh(qd @ kd.transpose(-1, -2) * scale / softcap) ** 2)
        dq = ds @ kd * scale
        dk = (ds.transpose(-1, -2) @ qd * scale).view(Hk, Hq // Hk, Sk, D).sum(1)
        dv = (p.transpose(-1, -2) @ do).view(Hk, Hq // Hk, Sk, D).sum(1)
        grads.append([g.transpose(0, 1) for g in (dq, dk, dv)])
    return [torch.stack([g[i] for g in grads]) for i in range(3)]


def _qkv_grad():
    torch.manual_seed(0)
    q = torch.randn(2, 7, 4, 16, dtype=F32, requires_grad=True)
    k = torch.randn(2, 9, 2, 16, dtype=F32, requires_grad=True)
    v = torch.randn(2, 9, 2, 16, dtype=F32, requires_grad=True)
    return q, k, v, torch.randn(2, 7, 4, 16, dtype=F32)


def _expected_grads(q, k, v, dout):
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, _ = _ref_attention(qd, kd, vd, 0.25, 2)
    return ref, torch.autograd.grad(ref, (qd, kd, vd), dout.double())


def test_eager_autograd_wiring(reference_extension):
    q, k, v, dout = _qkv_grad()
    out = aotriton.flash_attn_func(q, k, v, causal=True)
    assert out.grad_fn is not None and "EagerFlashAttn" in type(out.grad_fn).__name__
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref, want = _expected_grads(q, k, v, dout)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    for g, w in zip(grads, want):
        assert torch.allclose(g.double(), w, atol=1e-5)
    assert reference_extension == ["fwd", "bwd"]


FEATURE_CASES = [dict(window_size=(3, 1)), dict(softcap=5.0), dict(alibi_slopes="h"), dict(alibi_slopes="bh")]


def _feature_kwargs(kw, q):
    if kw.get("alibi_slopes") == "h":
        return dict(alibi_slopes=torch.rand(q.shape[2]))
    if kw.get("alibi_slopes") == "bh":
        return dict(alibi_slopes=torch.rand(q.shape[0], q.shape[2]))
    return kw


def _qkv_grad_f16():
    q, k, v, dout = _qkv_grad()
    return tuple(t.detach().half().requires_grad_() for t in (q, k, v)) + (dout.half(),)


@pytest.mark.parametrize("flag,use_torch_switch,want", [(False, False, False), (True, False, True),
                                                        (False, True, True)])
@pytest.mark.parametrize("route", ["eager", "compiled"])
def test_deterministic_reaches_the_backward_launch(flag, use_torch_switch, want, route, reference_extension,
                                                   monkeypatch):
    """flash_attn_func(deterministic=) (or torch.use_deterministic_algorithms) reaches the eager
    backward launch, which passes the dQ workspace only when it is False."""
    from aotriton import _flash_launch

    seen, inner = [], _flash_launch.bwd

    def bwd(*args):
        seen.append(args[14])
        return inner(*args)
    monkeypatch.setattr(_flash_launch, "bwd", bwd)
    q, k, v, dout = _qkv_grad()
    f = lambda q, k, v: aotriton.flash_attn_func(q, k, v, causal=True, deterministic=flag)  # noqa: E731
    if route == "compiled":
        f = torch.compile(f, backend="aot_eager", fullgraph=True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(use_torch_switch)
    try:
        torch.autograd.grad(f(q, k, v), (q, k, v), dout)
    finally:
        torch.use_deterministic_algorithms(before)
        torch._dynamo.reset()
    assert seen == [want]


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_eager_autograd_wiring_with_features(case, reference_extension):
    """The features reach the forward and the backward launch (same values), eagerly."""
    q, k, v, dout = _qkv_grad_f16()
    kw = _feature_kwargs(case, q)
    out = aotriton.flash_attn_func(q, k, v, causal=True, **kw)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    feat = (-1, -1, 0.0, None)
    if "window_size" in kw:
        feat = (*kw["window_size"], 0.0, None)
    elif "softcap" in kw:
        feat = (-1, -1, kw["softcap"], None)
    else:
        s = kw["alibi_slopes"]
        feat = (-1, -1, 0.0, s if s.dim() == 2 else s[None])
    ref, _ = _ref_features(q, k, v, 0.25, 2, feat)
    assert torch.allclose(out.double(), ref, atol=2e-3)
    with torch.enable_grad():
        leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
        want = torch.autograd.grad(_ref_features(*leaves, 0.25, 2, feat)[0], leaves, dout.double())
    for g, w in zip(grads, want):
        assert torch.allclose(g.double(), w, atol=2e-3)
    assert [c[0] for c in reference_extension] == ["fwd", "bwd"]
    assert reference_extension[0][1:] == reference_extension[1][1:] == (tuple(feat[:3]), feat[3] is not None)


@pytest.mark.parametrize("case", FEATURE_CASES[:3])
def test_compiled_autograd_with_features_goes_through_the_ops(case, reference_extension):
    graphs = {}
    backend = graph_recording_backend(graphs)
    q, k, v, dout = _qkv_grad_f16()
    kw = _feature_kwargs(case, q)

    def f(q, k, v):
        return aotriton.flash_attn_func(q, k, v, causal=True, **kw) * 2

    try:
        out = torch.compile(f, backend=backend, fullgraph=True)(q, k, v)
        torch.autograd.grad(out, (q, k, v), dout)
    finally:
        torch._dynamo.reset()
    assert "aotriton.attn_fwd" in graphs["fw"] and "aotriton.attn_bwd" in graphs["bw"]
    assert [c[0] for c in reference_extension] == ["fwd", "bwd"]
    assert reference_extension[0][1:] == reference_extension[1][1:]


def test_compiled_autograd_goes_through_the_ops(reference_extension):
    graphs = {}
    backend = graph_recording_backend(graphs)
    q, k, v, dout = _qkv_grad()

    def f(q, k, v):
        return aotriton.flash_attn_func(q, k, v, causal=True) * 2

    try:
        out = torch.compile(f, backend=backend, fullgraph=True)(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), dout)
    finally:
        torch._dynamo.reset()
    assert "aotriton.attn_fwd" in graphs["fw"] and "aotriton.attn_bwd" in graphs["bw"]
    ref, want = _expected_grads(q, k, v, 2 * dout)
    assert torch.allclose(out.double(), 2 * ref, atol=1e-5)
    for g, w in zip(grads, want):
        assert torch.allclose(g.double(), w, atol=1e-5)


@pytest.fixture
def reference_moe(monkeypatch, reference_extension):
    """topk_softmax and fused_experts computed in float64 on CPU tensors; device checks relaxed."""
    from aotriton import _flash_launch, _moe_launch, flash, moe

    def topk_softmax(topk_weights, topk_ids, gating_output, renormalize, force_config):
        w, ids = torch.softmax(gating_output.double(), -1).topk(topk_weights.shape[1], -1)
        topk_weights.copy_(w / w.sum(-1, keepdim=True) if renormalize else w)
        topk_ids.copy_(ids)

    def fused_experts(out, hidden, w1, w2, weights, ids, ws, activation, quant, *rest):
        out.copy_(_ref_moe(hidden, w1, w2, weights, ids))

    def fwd_plain(q, k, v, softmax_scale, causal, force_config):
        return _flash_launch.fwd(q, k, v, None, None, softmax_scale or q.shape[-1] ** -0.5, causal, 0.0, False,
                                 force_config, None)[0]
    monkeypatch.setattr(_moe_launch, "topk_softmax", topk_softmax)
    monkeypatch.setattr(_moe_launch, "fused_experts", fused_experts)
    monkeypatch.setattr(_flash_launch, "fwd_plain", fwd_plain)
    for module in (flash, moe):  # CPU tensors stand in for CUDA ones
        monkeypatch.setattr(module, "check_same_device", lambda named: None)


def _ref_moe(x, w1, w2, weights, ids):
    N = w2.shape[2]
    h = torch.einsum("mk,mjnk->mjn", x.double(), w1.double()[ids.long()])
    a = torch.nn.functional.silu(h[..., :N]) * h[..., N:]
    return torch.einsum("mjn,mjkn,mj->mk", a, w2.double()[ids.long()], weights.double())


def test_compiled_block_with_moe_traces_fullgraph(reference_moe):
    torch.manual_seed(1)
    E, N, K = 4, 8, 32
    w1, w2 = torch.randn(E, 2 * N, K), torch.randn(E, K, N)

    def block(x, gate):
        q = x.view(2, 3, 2, 16)
        h = x + aotriton.flash_attn_func(q, q, q, causal=True).reshape(6, K)
        return h + aotriton.fused_moe(h, w1, w2, gate, 2, True)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward
    x, gate = torch.randn(6, K), torch.randn(6, E)
    try:
        with torch.no_grad():
            eager = block(x, gate)
            compiled = torch.compile(block, backend=backend, fullgraph=True)(x, gate)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    for op in ("aotriton.attn_fwd", "aotriton.topk_softmax", "aotriton.fused_experts"):
        assert op in graphs[0], op
    assert torch.allclose(compiled, eager, atol=1e-5)
    ref_h = x.double() + _ref_attention(x.view(2, 3, 2, 16), x.view(2, 3, 2, 16), x.view(2, 3, 2, 16), 0.25,
                                        2)[0].reshape(6, K)
    w, ids = torch.softmax(gate.double(), -1).topk(2, -1)
    ref = ref_h + _ref_moe(ref_h, w1, w2, w / w.sum(-1, keepdim=True), ids)
    assert torch.allclose(eager.double(), ref, atol=1e-4)


def test_eager_calls_skip_the_dispatcher(monkeypatch):
    """Plain eager calls launch through the extension directly, never through torch.ops.aotriton."""
    from aotriton import _flash_launch, _glue, _moe_launch, moe

    monkeypatch.setattr(torch.Tensor, "get_device", lambda self: 0)  # CPU tensors pose as cuda:0
    for module in (_glue, _moe_launch):
        monkeypatch.setattr(module, "_raw_stream", lambda index: 0)
        monkeypatch.setattr(module, "_current_device", lambda: 0)
        # The default stream makes the device's context current first: no driver here.
        monkeypatch.setattr(module, "ensure_current_device", lambda index: None)
    monkeypatch.setattr(_flash_launch, "discard_buffer", lambda index, numel: 0)  # a cuda buffer otherwise
    launched = []
    monkeypatch.setattr(_flash_launch, "_attn_fwd", lambda *args: launched.append("attn_fwd"))
    monkeypatch.setattr(_moe_launch, "_act_and_mul", lambda *args: launched.append("act_and_mul"))

    class NoOps:
        def __getattr__(self, name):
            pytest.fail(f"an eager call went through torch.ops.aotriton.{name}")
    monkeypatch.setattr(torch.ops, "aotriton", NoOps())
    monkeypatch.setattr(moe, "_ops", NoOps())
    q = torch.randn(1, 8, 2, 64, dtype=F16)
    out = aotriton.flash_attn_func(q, q, q, causal=True)
    assert out.shape == q.shape
    assert aotriton.silu_and_mul(torch.randn(3, 64, dtype=F16)).shape == (3, 32)
    assert launched == ["attn_fwd", "act_and_mul"]
