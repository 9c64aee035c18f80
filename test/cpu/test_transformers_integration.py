"""aotriton.integrations.transformers without a GPU: tiny random transformers
models on the CPU, with the flash / fused_experts launches replaced by float
torch references, so what is tested is the adapters' own logic (mask kinds,
unpadding, causal alignment against a KV cache, GQA, weight layouts) against
transformers' sdpa / eager paths. Skipped when transformers is not installed.
The real kernels run in test/gpu/test_transformers_gpu.py."""
import os
import subprocess
import sys

import pytest
import torch

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
from aotriton.integrations import transformers as integ  # noqa: E402

import hf_attention_reference  # noqa: E402
from hf_attention_reference import padded_batch as batch  # noqa: E402


@pytest.fixture
def reference_kernels(monkeypatch):
    hf_attention_reference.install(monkeypatch, integ)


def tiny_llama(**extra):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **extra)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_mixtral():
    cfg = transformers.MixtralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                     num_experts_per_tok=2, max_position_embeddings=128)
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(cfg).eval()


def logits(model, impl, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs).logits


# ----------------------------------------------------------------- tests
def test_import_aotriton_does_not_import_transformers():
    code = "import sys, aotriton; assert 'transformers' not in sys.modules, 'imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # where aotriton was found
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_registered_in_every_interface():
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    assert ALL_ATTENTION_FUNCTIONS["aotriton"] is integ.aotriton_attention_forward
    assert ALL_MASK_ATTENTION_FUNCTIONS["aotriton"] is integ.aotriton_mask
    assert ALL_EXPERTS_FUNCTIONS["aotriton"] is integ.aotriton_experts_forward


def test_prefill_matches_sdpa(reference_kernels):
    model = tiny_llama()
    ids, _ = batch()
    want = logits(model, "sdpa", input_ids=ids)
    got = logits(model, "aotriton", input_ids=ids)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_matches_sdpa_on_valid_positions(reference_kernels, side):
    model = tiny_llama()
    ids, mask = batch(side=side)
    want = logits(model, "sdpa", input_ids=ids, attention_mask=mask)
    got = logits(model, "aotriton", input_ids=ids, attention_mask=mask)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_decode_with_kv_cache_matches_sdpa(reference_kernels, cache):
    """Decode steps (1 query against the cache, bottom-right causal) with left
    padding; the static cache adds unwritten slots past the last token."""
    model = tiny_llama()
    ids, mask = batch()
    runs = {}
    for impl in ("sdpa", "aotriton"):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            runs[impl] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                        output_logits=True, return_dict_in_generate=True, cache_implementation=cache,
                                        pad_token_id=0)
    assert torch.equal(runs["aotriton"].sequences, runs["sdpa"].sequences)
    for got, want in zip(runs["aotriton"].logits, runs["sdpa"].logits):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_against_cache_is_bottom_right_causal(reference_kernels):
    """Several new queries against a longer cache: each sees the cache and its own prefix."""
    model = tiny_llama()
    ids, _ = batch(B=2, pad=(0, 0))
    full = logits(model, "sdpa", input_ids=ids)
    model.set_attn_implementation("aotriton")
    with torch.no_grad():
        first = model(input_ids=ids[:, :6], use_cache=True)
        rest = model(input_ids=ids[:, 6:], past_key_values=first.past_key_values, use_cache=True).logits
    torch.testing.assert_close(rest, full[:, 6:], atol=1e-4, rtol=1e-4)


def test_training_mode_gradients_match_sdpa(reference_kernels):
    model = tiny_llama().train()
    ids, mask = batch()
    grads = {}
    for impl in ("sdpa", "aotriton"):
        model.set_attn_implementation(impl)
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        grads[impl] = [p.grad.clone() for p in model.parameters()]
    for got, want in zip(grads["aotriton"], grads["sdpa"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_training_gradients_match_eager_when_no_loss_reads_a_padded_query(reference_kernels):
    """Against eager (the fp32 reference of test/gpu/test_transformers_gpu.py): a
    padded query attends to no key, so its output is implementation-defined (eager
    averages every value, aotriton and sdpa give 0) and a label predicted from it
    (the first real token after left padding) makes the gradients differ by ~25%
    here. With such labels ignored, eager and aotriton agree."""
    model = tiny_llama().train()
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    grads = {}
    for impl in ("eager", "aotriton"):
        model.set_attn_implementation(impl)
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads[impl] = [p.grad.clone() for p in model.parameters()]
    for got, want in zip(grads["aotriton"], grads["eager"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_4d_mask_raises_naming_the_mask_kind(reference_kernels):
    model = tiny_llama()
    ids, _ = batch(B=1, pad=(0,))
    mask4d = torch.ones(1, 1, 11, 11, dtype=torch.bool).tril()
    with pytest.raises(NotImplementedError, match="4-D"):
        logits(model, "aotriton", input_ids=ids, attention_mask=mask4d)


def test_mask_hook_kinds():
    f = integ.aotriton_mask
    causal = transformers.masking_utils.causal_mask_function
    assert f(2, 5, 5, attention_mask=torch.ones(2, 5, dtype=torch.bool)) is None  # no padding
    pad = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(f(2, 5, 5, attention_mask=pad), pad)
    # static cache: 8 slots, 5 written (q_offset 3 + 2 new queries)
    got = f(2, 2, 8, q_offset=3, kv_offset=0, mask_function=causal, attention_mask=None, device="cpu")
    assert torch.equal(got, torch.arange(8).expand(2, 8) < 5)
    # any other pattern comes back as a dense 4-D mask (which the attention refuses)
    packed = transformers.masking_utils.and_masks(causal, lambda b, h, q, k: q >= 0)
    assert f(1, 4, 4, mask_function=packed, attention_mask=None, device="cpu").dim() == 4


def test_mixtral_experts_match_eager(reference_kernels):
    model = tiny_mixtral()
    ids, mask = batch()
    model.set_experts_implementation("eager")
    want = logits(model, "sdpa", input_ids=ids, attention_mask=mask)
    model.set_experts_implementation("aotriton")
    got = logits(model, "aotriton", input_ids=ids, attention_mask=mask)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)


class _Experts(torch.nn.Module):
    def __init__(self, E=3, H=16, I=8, transposed=False, concatenated=True):
        super().__init__()
        torch.manual_seed(2)
        self.ref_w1 = torch.randn(E, 2 * I, H)  # [gate; up] rows
        self.ref_w2 = torch.randn(E, H, I)
        w1, w2 = self.ref_w1, self.ref_w2
        if not concatenated:  # rows gate0, up0, gate1, up1...
            w1 = torch.stack(w1.chunk(2, dim=1), dim=2).reshape(E, 2 * I, H)
        if transposed:
            w1, w2 = w1.transpose(1, 2).contiguous(), w2.transpose(1, 2).contiguous()
        self.gate_up_proj, self.down_proj = torch.nn.Parameter(w1), torch.nn.Parameter(w2)
        self.is_transposed, self.is_concatenated, self.has_gate, self.has_bias = transposed, concatenated, True, False


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("concatenated", [True, False])
def test_experts_weight_layouts(transposed, concatenated):
    m = _Experts(transposed=transposed, concatenated=concatenated)
    w1, w2 = integ.experts_weights(m)
    assert torch.equal(w1, m.ref_w1) and torch.equal(w2, m.ref_w2)
    assert w1.stride(-1) == 1 and w2.stride(-1) == 1
    if not transposed and concatenated:  # transformers' default layout: views, no copy
        assert w1.data_ptr() == m.gate_up_proj.data_ptr() and w2.data_ptr() == m.down_proj.data_ptr()


def test_experts_unsupported_variants_raise():
    m = _Experts()
    m.has_bias = True
    with pytest.raises(NotImplementedError, match="biases"):
        integ.experts_weights(m)
    m.has_bias, m.has_gate = False, False
    with pytest.raises(NotImplementedError, match="ungated"):
        integ.experts_weights(m)


def test_from_config_accepts_aotriton_for_both_implementations():
    cfg = tiny_mixtral().config
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="aotriton",
                                                          experts_implementation="aotriton")
    assert model.config._attn_implementation == "aotriton"
    assert model.config._experts_implementation == "aotriton"
