"""aotriton.integrations.transformers: sliding windows and logit softcapping
without a GPU. The window convention is checked against transformers' own
masks (sdpa_mask of its sliding-window mask functions, the sizes its sliding
KV caches report, and its flash-attention path's window), the adapter's
argument mapping with a recording stand-in for the kernels, and tiny random
Mistral / Gemma-2 / Gemma-3 / ModernBERT models run end to end with float64 reference
kernels against transformers' sdpa / eager paths (prefill, padding, KV-cache
decode with dynamic and static caches, chunked prefill, training gradients).
Skipped when transformers is not installed. The real kernels run in
test/gpu/test_transformers_gpu.py."""
import pytest
import torch

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from aotriton.integrations import transformers as integ  # noqa: E402
from transformers import cache_utils  # noqa: E402
from transformers import masking_utils as mu  # noqa: E402

import hf_attention_reference  # noqa: E402
from hf_attention_reference import padded_batch as batch  # noqa: E402
from feature_ref import visible  # noqa: E402

W = 4  # the tiny models' window: shorter than every prompt below


@pytest.fixture
def reference_kernels(monkeypatch):
    hf_attention_reference.install(monkeypatch, integ)
    # The tiny CPU models run in fp32, which the real window/softcap kernels refuse
    # (checked on its own in test_window_needs_half_precision_and_no_dropout).
    monkeypatch.setattr(integ, "_check_feature_inputs", lambda *args: None)


# ----------------------------------------------------------------- convention vs transformers' masks
def sdpa_visible(q_len, kv_len, q_offset, kv_offset, mask_function):
    m = mu.sdpa_mask(batch_size=1, q_length=q_len, kv_length=kv_len, q_offset=q_offset, kv_offset=kv_offset,
                     mask_function=mask_function, allow_is_causal_skip=False)
    return m[0, 0]


def adapter_visible(q_len, kv_len, sliding_window, causal):
    window = integ.window_size(sliding_window, causal, q_len, kv_len) or (-1, -1)
    return visible(q_len, kv_len, 2 if causal else 0, window)


@pytest.mark.parametrize("window", [2, 4, 7])
@pytest.mark.parametrize("q_len", [1, 3, 11])
def test_causal_window_matches_sdpa_mask_through_a_dynamic_sliding_cache(window, q_len):
    """Prefill then decode/chunk steps through transformers' DynamicSlidingWindowLayer:
    at every step the sizes it reports and the keys it returns, masked by
    transformers' sliding mask, equal what the kernel sees with our window.
    (Window 1 is left out: that layer keeps every key then, `keys[-0:]`, and its
    reported sizes disagree with its keys for any attention implementation.)"""
    layer = cache_utils.DynamicSlidingWindowLayer(sliding_window=window)
    seen = 0
    for step_len in (q_len, 1, q_len, 1, 1):
        kv_len, kv_offset = layer.get_mask_sizes(step_len)
        keys, _ = layer.update(torch.randn(1, 1, step_len, 2), torch.randn(1, 1, step_len, 2))
        assert keys.shape[2] == kv_len  # keys returned = the mask's columns: the last kv_len positions
        want = sdpa_visible(step_len, kv_len, seen, kv_offset, mu.sliding_window_causal_mask_function(window))
        assert torch.equal(adapter_visible(step_len, kv_len, window, True), want), (seen, step_len)
        seen += step_len


@pytest.mark.parametrize("window", [1, 4, 7])
def test_causal_window_matches_sdpa_mask_through_a_static_sliding_cache(window):
    """StaticSlidingWindowLayer: before it fills, its unwritten slots are keys no
    query may see (the mask hook marks them padding); the written ones equal the
    kernel's view with our window."""
    layer = cache_utils.StaticSlidingWindowLayer(max_cache_len=64, sliding_window=window)
    seen = 0
    for step_len in (3, 1, 1, 5, 1, 1, 1):
        kv_len, kv_offset = layer.get_mask_sizes(step_len)
        keys, _ = layer.update(torch.randn(1, 1, step_len, 2), torch.randn(1, 1, step_len, 2))
        assert keys.shape[2] == kv_len
        want = sdpa_visible(step_len, kv_len, seen, kv_offset, mu.sliding_window_causal_mask_function(window))
        written = seen + step_len - kv_offset
        assert not want[:, written:].any()
        valid = integ.aotriton_mask(1, step_len, kv_len, q_offset=seen, kv_offset=kv_offset,
                                    mask_function=mu.sliding_window_causal_mask_function(window),
                                    local_size=window, device="cpu")
        if written < kv_len:
            assert torch.equal(valid[0], torch.arange(kv_len) < written)
        else:
            assert valid is None
        assert torch.equal(adapter_visible(step_len, written, window, True), want[:, :written]), (seen, step_len)
        seen += step_len


@pytest.mark.parametrize("config_window", [1, 3, 4])
def test_bidirectional_window_matches_modernbert_mask(config_window):
    """ModernBERT passes config.sliding_window + 1 to the attention and masks
    |q - kv| <= config.sliding_window."""
    cfg = modernbert_config(config_window)
    model = transformers.ModernBertModel(cfg)
    passed = {layer.attn.sliding_window for layer in model.layers if layer.attn.sliding_window is not None}
    assert passed == {config_window + 1}
    for S in (1, 5, 12):
        want = sdpa_visible(S, S, 0, 0, mu.sliding_window_bidirectional_mask_function(config_window))
        assert torch.equal(adapter_visible(S, S, config_window + 1, False), want)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("key_len", [1, 3, 4, 5, 40])
def test_window_agrees_with_transformers_flash_path(causal, key_len):
    """transformers' flash-attention path passes window_size (W-1, W-1) when the
    keys outnumber W; with causal, flash-attn ignores the right side (ours is 0)."""
    supports = dict.fromkeys(("dropout_p", "window_size", "deterministic", "softcap", "max_seqlen_q",
                              "max_seqlen_k"), True)
    supports.update(s_aux=False, learnable_sink=False)
    theirs = transformers.modeling_flash_attention_utils._process_flash_attention_kwargs(
        query_length=key_len, key_length=key_len, is_causal=causal, sliding_window=W, supports_mapping=supports)
    ours = integ.window_size(W, causal, key_len, key_len)
    if "window_size" not in theirs:
        assert ours is None
    else:
        assert ours == ((W - 1, 0) if causal else theirs["window_size"])


# ----------------------------------------------------------------- mask hook
def test_mask_hook_takes_sliding_patterns_like_causal_ones():
    f = integ.aotriton_mask
    sliding = mu.sliding_window_causal_mask_function(W)
    assert f(2, 6, 6, mask_function=sliding, local_size=W, attention_mask=None, device="cpu") is None
    assert f(2, 6, 6, mask_function=sliding, local_size=W, attention_mask=torch.ones(2, 6, dtype=torch.bool),
             device="cpu") is None
    pad = torch.ones(2, 6, dtype=torch.bool)
    pad[1, :2] = False
    assert torch.equal(f(2, 6, 6, mask_function=sliding, local_size=W, attention_mask=pad, device="cpu"), pad)
    # decode against a full dynamic sliding cache (kv_offset 3, 4 keys): the model passes the whole
    # 2-D mask, the hook keeps its last kv_length columns
    long_pad = torch.ones(2, 7, dtype=torch.bool)
    long_pad[1, :4] = False
    got = f(2, 1, 4, q_offset=6, kv_offset=3, mask_function=sliding, local_size=W, attention_mask=long_pad,
            device="cpu")
    assert torch.equal(got, torch.tensor([[True] * 4, [False, True, True, True]]))
    bidir = mu.sliding_window_bidirectional_mask_function(W)
    assert f(2, 6, 6, mask_function=bidir, local_size=W, attention_mask=None, device="cpu") is None


def test_mask_hook_materializes_sliding_window_combined_with_other_patterns():
    """Only transformers' plain sliding functions are recognized; combined
    patterns come back dense (4-D), which the attention refuses."""
    f = integ.aotriton_mask
    sliding = mu.sliding_window_causal_mask_function(W)
    packed = mu.packed_sequence_mask_function(torch.tensor([[0, 0, 0, 1, 1, 1]]))
    combined = [mu.and_masks(sliding, packed), mu.or_masks(sliding, lambda b, h, q, k: k == 0),
                mu.and_masks(mu.sliding_window_overlay(W), mu.bidirectional_mask_function),
                mu.and_masks(mu.causal_mask_function, mu.sliding_window_overlay(W))]
    for fn in combined:
        assert integ.sliding_window_pattern(fn) is None
        assert f(1, 6, 6, mask_function=fn, attention_mask=None, device="cpu").dim() == 4
    # local_size disagreeing with the overlay's window: not recognized either
    assert integ.sliding_window_pattern(sliding, local_size=W + 1) is None
    assert integ.sliding_window_pattern(sliding, local_size=W) == (mu.causal_mask_function, W)


# ----------------------------------------------------------------- argument mapping
class _Attn(torch.nn.Module):
    def __init__(self, is_causal=True, dtype=torch.bfloat16, sliding_window=None, **attrs):
        super().__init__()
        self.is_causal = is_causal
        self.proj = torch.nn.Linear(2, 2).to(dtype)
        if sliding_window is not None:
            self.sliding_window = sliding_window
        self.__dict__.update(attrs)


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def record(name):
        def fn(q, k, v, *args, **kwargs):
            calls.append((name, kwargs))
            return torch.zeros_like(q)
        return fn
    monkeypatch.setattr(integ._flash, "flash_attn_func", record("dense"))
    monkeypatch.setattr(integ._flash, "flash_attn_varlen_func", record("varlen"))
    return calls


def qkv(B=2, Sq=10, Sk=10, Hq=4, Hk=2, D=8, dtype=torch.bfloat16):
    return (torch.randn(B, Hq, Sq, D, dtype=dtype), torch.randn(B, Hk, Sk, D, dtype=dtype),
            torch.randn(B, Hk, Sk, D, dtype=dtype))


@pytest.mark.parametrize("Sq,Sk,sliding_window,causal,want", [
    (10, 10, W, True, (W - 1, 0)),          # prefill longer than the window
    (1, 10, W, True, (W - 1, 0)),           # decode against a longer cache
    (3, W + 2, W, True, (W - 1, 0)),        # chunk against a rolled sliding cache
    (W, W, W, True, None),                  # every key inside the window: no window (as transformers)
    (10, 10, W, False, (W - 1, W - 1)),     # bidirectional (ModernBERT passes its half width + 1)
    (10, 10, None, True, None),
])
def test_window_argument_mapping(recorded, Sq, Sk, sliding_window, causal, want):
    out, weights = integ.aotriton_attention_forward(_Attn(causal), *qkv(Sq=Sq, Sk=Sk), None, scaling=0.3,
                                                    sliding_window=sliding_window, is_causal=causal)
    (name, kwargs), = recorded
    assert name == "dense" and kwargs["causal"] is causal and kwargs["softmax_scale"] == 0.3
    assert kwargs.get("window_size") == want and "softcap" not in kwargs
    assert out.shape == (2, Sq, 4, 8) and weights is None


def test_softcap_and_window_reach_the_varlen_path(recorded):
    pad = torch.ones(2, 10, dtype=torch.bool)
    pad[0, :3] = False
    integ.aotriton_attention_forward(_Attn(), *qkv(), pad, sliding_window=W, softcap=30.0)
    integ.aotriton_attention_forward(_Attn(), *qkv(), None, sliding_window=None, softcap=None)
    integ.aotriton_attention_forward(_Attn(), *qkv(), None, softcap=0.0)
    (n1, kw1), (n2, kw2), (n3, kw3) = recorded
    assert n1 == "varlen" and kw1["window_size"] == (W - 1, 0) and kw1["softcap"] == 30.0 and kw1["causal"]
    assert "window_size" not in kw2 and "softcap" not in kw2 and "softcap" not in kw3


def test_unsupported_cases_raise_naming_them(recorded):
    with pytest.raises(NotImplementedError, match="sinks"):
        integ.aotriton_attention_forward(_Attn(), *qkv(), None, s_aux=torch.zeros(4))
    with pytest.raises(NotImplementedError, match="_Attn has sliding_window=4 but the model does not pass it"):
        integ.aotriton_attention_forward(_Attn(sliding_window=4), *qkv(), None)
    holes = torch.ones(2, 10, dtype=torch.bool)
    holes[1, 5] = False
    with pytest.raises(NotImplementedError, match="holes"):
        integ.aotriton_attention_forward(_Attn(), *qkv(), holes, sliding_window=W)
    integ.aotriton_attention_forward(_Attn(), *qkv(), holes)  # no window: unpadding keeps the causal order
    # Exaone-4's full layers keep the attribute, marked is_sliding=False, and pass None
    integ.aotriton_attention_forward(_Attn(sliding_window=4, is_sliding=False), *qkv(), None)
    with pytest.raises(ValueError, match="sliding_window must be >= 1"):
        integ.aotriton_attention_forward(_Attn(), *qkv(), None, sliding_window=0)
    assert len(recorded) == 2


def test_window_needs_half_precision_and_no_dropout(recorded):
    fp32 = _Attn(dtype=torch.float32)
    with pytest.raises(NotImplementedError, match="sliding window .*fp16/bf16.*float32"):
        integ.aotriton_attention_forward(fp32, *qkv(dtype=torch.float32), None, sliding_window=W)
    with pytest.raises(NotImplementedError, match="softcap=30.0 needs fp16/bf16"):
        integ.aotriton_attention_forward(fp32, *qkv(dtype=torch.float32), None, softcap=30.0)
    with pytest.raises(NotImplementedError, match="attention dropout"):
        integ.aotriton_attention_forward(_Attn(), *qkv(), None, dropout=0.1, sliding_window=W)
    # fp32 activations of a bf16 module (PEFT's fp32 norms) run in bf16; a window that hides nothing is dropped
    integ.aotriton_attention_forward(_Attn(), *qkv(dtype=torch.float32), None, sliding_window=W)
    integ.aotriton_attention_forward(fp32, *qkv(Sq=W, Sk=W, dtype=torch.float32), None, sliding_window=W)
    assert recorded[0][1]["window_size"] == (W - 1, 0) and "window_size" not in recorded[1][1]


# ----------------------------------------------------------------- tiny models vs sdpa / eager
VOCAB = 97


def tiny_mistral(sliding_window=W):
    cfg = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=sliding_window,
                                     max_position_embeddings=128)
    torch.manual_seed(0)
    return transformers.MistralForCausalLM(cfg).eval()


def tiny_gemma2(softcap=1.0):
    """Sliding window on every other layer, attention and final logit softcapping.
    The query projections are scaled up so the logits reach the cap (at init they
    are ~0.01, where tanh is the identity and softcapping would go untested)."""
    cfg = transformers.Gemma2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=W,
                                    attn_logit_softcapping=softcap, final_logit_softcapping=3.0,
                                    query_pre_attn_scalar=16, max_position_embeddings=128)
    assert cfg.layer_types[:2] == ["sliding_attention", "full_attention"]
    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40)
    return model


def tiny_gemma3():
    """Gemma-3 text: sliding and full layers (5:1 in the real models), no softcap."""
    cfg = transformers.Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=W,
                                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                        query_pre_attn_scalar=16, max_position_embeddings=128)
    torch.manual_seed(0)
    return transformers.Gemma3ForCausalLM(cfg).eval()


def modernbert_config(config_window=2):
    return transformers.ModernBertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=3, num_attention_heads=4,
                                         local_attention=2 * config_window, global_attn_every_n_layers=3,
                                         pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2,
                                         sep_token_id=1)


# Gemma-2's softcap is applied by transformers' eager path only (its sdpa path drops it).
MODELS = {"mistral": (tiny_mistral, "sdpa"), "gemma2": (tiny_gemma2, "eager"), "gemma3": (tiny_gemma3, "sdpa")}


def logits(model, impl, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs).logits


def test_the_features_matter_in_the_tiny_models():
    """Sanity for the comparisons below: dropping the window or the softcap
    changes transformers' own logits well beyond the tolerances used."""
    ids, _ = batch()
    windowed, full = logits(tiny_mistral(), "sdpa", input_ids=ids), logits(tiny_mistral(None), "sdpa", input_ids=ids)
    assert (windowed - full).abs().max() > 1e-2
    capped, uncapped = logits(tiny_gemma2(), "eager", input_ids=ids), logits(tiny_gemma2(None), "eager", input_ids=ids)
    assert (capped - uncapped).abs().max() > 1e-2


@pytest.mark.parametrize("name", MODELS)
def test_prefill_matches_transformers(reference_kernels, name):
    make, impl = MODELS[name]
    model = make()
    ids, _ = batch()
    torch.testing.assert_close(logits(model, "aotriton", input_ids=ids), logits(model, impl, input_ids=ids),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_matches_transformers_on_valid_positions(reference_kernels, name, side):
    make, impl = MODELS[name]
    model = make()
    ids, mask = batch(side=side)
    want = logits(model, impl, input_ids=ids, attention_mask=mask)
    got = logits(model, "aotriton", input_ids=ids, attention_mask=mask)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_decode_with_sliding_kv_cache_matches_transformers(reference_kernels, name, cache):
    """Left-padded prompts longer than the window, then decode steps (one query
    against the sliding cache, which rolls past W) and full-attention layers'
    caches side by side (Gemma-2)."""
    make, impl = MODELS[name]
    model = make()
    ids, mask = batch()
    runs = {}
    for attn in (impl, "aotriton"):
        model.set_attn_implementation(attn)
        with torch.no_grad():
            runs[attn] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                        output_logits=True, return_dict_in_generate=True,
                                        cache_implementation=cache, pad_token_id=0)
    assert torch.equal(runs["aotriton"].sequences, runs[impl].sequences)
    for got, want in zip(runs["aotriton"].logits, runs[impl].logits):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_chunked_prefill_against_sliding_cache(reference_kernels, name):
    """Several new queries against a cache longer than the window: bottom-right window."""
    make, impl = MODELS[name]
    model = make()
    ids, _ = batch(B=2, pad=(0, 0))
    full = logits(model, impl, input_ids=ids)
    model.set_attn_implementation("aotriton")
    with torch.no_grad():
        first = model(input_ids=ids[:, :6], use_cache=True)
        rest = model(input_ids=ids[:, 6:], past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(rest, full[:, 6:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_training_gradients_match_transformers(reference_kernels, name):
    """Labels predicted from a padded position are ignored (see the eager note in
    test_transformers_integration.py)."""
    make, impl = MODELS[name]
    model = make().train()
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    grads = {}
    for attn in (impl, "aotriton"):
        model.set_attn_implementation(attn)
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads[attn] = [p.grad.clone() for p in model.parameters()]
    for got, want in zip(grads["aotriton"], grads[impl]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_modernbert_bidirectional_window_matches_sdpa(reference_kernels):
    torch.manual_seed(0)
    model = transformers.ModernBertModel(modernbert_config(2)).eval()
    ids, mask = batch(S=12, pad=(0, 3, 0), side="right")
    out = {}
    for attn in ("sdpa", "aotriton"):
        model.set_attn_implementation(attn)
        with torch.no_grad():
            out[attn] = model(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(out["aotriton"][valid], out["sdpa"][valid], atol=1e-4, rtol=1e-4)


def test_model_that_does_not_pass_its_window_raises(reference_kernels):
    """Qwen2-MoE's sliding layers set self.sliding_window but call the attention
    without it (sdpa/eager apply the window through the mask alone)."""
    cfg = transformers.Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                      moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      num_experts=4, num_experts_per_tok=2, use_sliding_window=True,
                                      sliding_window=W, layer_types=["sliding_attention", "full_attention"])
    model = transformers.Qwen2MoeForCausalLM(cfg).eval()
    model.set_experts_implementation("eager")
    with pytest.raises(NotImplementedError, match="Qwen2MoeAttention has sliding_window=4 but the model does not"):
        logits(model, "aotriton", input_ids=batch()[0])


def test_gpt_oss_sinks_raise(reference_kernels):
    cfg = transformers.GptOssConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                                    num_experts_per_tok=2, sliding_window=W)
    model = transformers.GptOssForCausalLM(cfg).eval()
    model.set_experts_implementation("eager")
    with pytest.raises(NotImplementedError, match="attention sinks"):
        logits(model, "aotriton", input_ids=batch()[0])


def test_torch_compile_traces_the_sliding_mask_hook(reference_kernels):
    """dynamo runs through the mask hook's pattern recognition (kept out of the
    graph: it cannot guard on code objects) for Gemma-2's sliding and full
    layers and gives the eager result."""
    model = tiny_gemma2()
    ids, mask = batch()
    want = logits(model, "aotriton", input_ids=ids, attention_mask=mask)
    try:
        with torch.no_grad():
            got = torch.compile(model, backend="eager")(input_ids=ids, attention_mask=mask).logits
    finally:
        torch._dynamo.reset()
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)


def test_phimoe_config_window_that_no_layer_passes_raises_where_it_matters(reference_kernels):
    """Phi-MoE builds a sliding mask for every layer from config.sliding_window
    (no layer_types) and passes no window: refused once the keys outnumber it,
    and equal to sdpa while the window hides nothing."""
    cfg = transformers.PhimoeConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                    num_experts_per_tok=2, sliding_window=W)
    torch.manual_seed(0)
    model = transformers.PhimoeForCausalLM(cfg).eval()
    model.set_experts_implementation("eager")
    ids, _ = batch(B=2, pad=(0, 0))
    with pytest.raises(NotImplementedError, match="PhimoeConfig has sliding_window=4 .* does not pass it"):
        logits(model, "aotriton", input_ids=ids)
    short = ids[:, :W]
    torch.testing.assert_close(logits(model, "aotriton", input_ids=short), logits(model, "sdpa", input_ids=short),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_static_cache_decode_without_attention_mask(reference_kernels, name):
    """A static cache's full layers report q_offset as a 0-d tensor; with no 2-D
    mask the hook still marks the unwritten slots (else a decode step would
    attend to the zero-filled tail of the cache)."""
    make, impl = MODELS[name]
    model = make()
    ids, _ = batch(B=2, pad=(0, 0))
    full = logits(model, impl, input_ids=ids)
    model.set_attn_implementation("aotriton")
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        model(input_ids=ids[:, :8], past_key_values=cache, use_cache=True)
        steps = [model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits[:, -1]
                 for t in range(8, ids.shape[1])]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 8:], atol=1e-4, rtol=1e-4)


def test_mask_hook_refuses_padding_after_tokens_in_a_step_against_a_cache():
    """Sq < Sk: the attention aligns the queries on each row's last valid keys, right
    for left padding only (a right-padded static-cache prefill gave logits 0.47 off)."""
    f = integ.aotriton_mask
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = f(2, 5, 8, q_offset=0, kv_offset=0, attention_mask=left, device="cpu")  # static cache, 8 slots
    assert torch.equal(got, F_pad(left, 8))
    for q_offset in (0, torch.tensor(0)):  # a static cache's full layers give a 0-d tensor
        with pytest.raises(NotImplementedError, match="padding after real tokens"):
            f(2, 5, 8, q_offset=q_offset, kv_offset=0, attention_mask=left.flip(1), device="cpu")
    # a chunk of 3 after 5 cached tokens, its last query padded
    chunk = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    with pytest.raises(NotImplementedError, match="padding after real tokens"):
        f(1, 3, 8, q_offset=5, kv_offset=0, attention_mask=chunk, device="cpu")
    # one query (decode) and a full prefill (Sq == Sk: the queries are unpadded too) are not restricted
    assert f(1, 1, 8, q_offset=7, kv_offset=0, attention_mask=chunk, device="cpu") is not None
    assert f(1, 8, 8, attention_mask=chunk, device="cpu") is not None


@pytest.mark.parametrize("name", MODELS)
def test_right_padded_prefill_into_a_static_cache(reference_kernels, name):
    """Gemma-2/3's full layers see 16 static slots for 11 queries: refused. Mistral's
    layers are all sliding, and a sliding static cache hands a prompt longer than
    the window its own keys only (Sq == Sk, queries unpadded too): as sdpa."""
    make, impl = MODELS[name]
    model = make()
    ids, mask = batch(side="right")

    def run(attn):
        model.set_attn_implementation(attn)
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, use_cache=True,
                         past_key_values=transformers.StaticCache(config=model.config, max_cache_len=16)).logits
    if name == "mistral":
        valid = mask.bool()
        torch.testing.assert_close(run("aotriton")[valid], run(impl)[valid], atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises(NotImplementedError, match="padding after real tokens"):
            run("aotriton")


def F_pad(mask, length):
    return torch.nn.functional.pad(mask, (0, length - mask.shape[1]), value=False)
