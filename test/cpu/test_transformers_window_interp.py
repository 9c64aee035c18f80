"""The transformers adapter with the real flash band kernel (Triton
interpreter, fp16) on a tiny Gemma-2 (sliding and full layers, attention
softcap): every attention call the model makes (padded prefill through
varlen, decode against dynamic and static sliding caches) agrees with the
float64 reference for the exact arguments the adapter passes, and the logits
with transformers' eager path. Ties the kernel's window alignment to
transformers' without a GPU. Skipped when transformers is not installed."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede the triton import

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
from aotriton.integrations import transformers as integ  # noqa: E402

import hf_attention_reference as R  # noqa: E402
from test_transformers_window_softcap import batch, logits, tiny_gemma2  # noqa: E402
from python.jit.flash_fwd import attn_fwd_jit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
OUT_TOL = dict(atol=3e-3, rtol=3e-3)  # fp16 kernel vs float64 (test_flash_features_interp.py)


def _kernel(q, k, v, softmax_scale, causal, window_size, softcap, **seqs):
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    o, _ = attn_fwd_jit(*(t.half().contiguous() for t in (q, k, v)), sm_scale=scale, causal_type=2 if causal else 0,
                        config=SMALL, window=tuple(window_size), softcap=softcap, **seqs)
    return o


@pytest.fixture
def band_kernel(monkeypatch):
    """flash_attn_func / varlen run the interpreter's kernel in fp16; each call is
    checked against the float64 reference on the same fp16-rounded inputs."""
    calls = []

    def dense(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0):
        assert dropout_p == 0.0
        got = _kernel(q, k, v, softmax_scale, causal, window_size, softcap)
        q16, k16, v16 = (t.half().double() for t in (q, k, v))
        torch.testing.assert_close(got.double(), R.ref_flash_attn_func(q16, k16, v16, 0.0, softmax_scale, causal,
                                                                       window_size=window_size, softcap=softcap),
                                   **OUT_TOL)
        calls.append(("dense", q.shape[1], k.shape[1], tuple(window_size), softcap))
        return got.to(q.dtype)

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False,
               window_size=(-1, -1), softcap=0.0):
        assert dropout_p == 0.0
        got = _kernel(q, k, v, softmax_scale, causal, window_size, softcap, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                      max_seqlen_q=max_q, max_seqlen_k=max_k)
        q16, k16, v16 = (t.half().double() for t in (q, k, v))
        want = R.ref_flash_attn_varlen_func(q16, k16, v16, cu_q, cu_k, max_q, max_k, 0.0, softmax_scale, causal,
                                            window_size=window_size, softcap=softcap)
        torch.testing.assert_close(got.double(), want, **OUT_TOL)
        calls.append(("varlen", max_q, max_k, tuple(window_size), softcap))
        return got.to(q.dtype)

    monkeypatch.setattr(integ._flash, "flash_attn_func", dense)
    monkeypatch.setattr(integ._flash, "flash_attn_varlen_func", varlen)
    monkeypatch.setattr(integ, "_check_feature_inputs", lambda *args: None)  # fp32 model, fp16 kernel
    return calls


def rel_err(got, want):
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_gemma2_prefill_and_decode_with_the_band_kernel(band_kernel, cache):
    model = tiny_gemma2()
    ids, mask = batch()
    want = logits(model, "eager", input_ids=ids, attention_mask=mask)
    prompt = 8  # > the window (4): the sliding cache rolls during the decode steps
    model.set_attn_implementation("aotriton")
    kw = {}
    if cache == "static":
        kw["past_key_values"] = transformers.StaticCache(config=model.config, max_cache_len=16)
    with torch.no_grad():
        out = model(input_ids=ids[:, :prompt], attention_mask=mask[:, :prompt], use_cache=True, **kw)
        steps, past = [out.logits], out.past_key_values
        for t in range(prompt, ids.shape[1]):  # teacher-forced decode, one query against the cache
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=past,
                        use_cache=True)
            steps.append(out.logits)
    got = torch.cat(steps, 1)
    valid = mask.bool()
    assert rel_err(got[valid], want[valid]) < 2e-3
    windows = {c[3] for c in band_kernel}
    assert (3, 0) in windows and (-1, -1) in windows  # sliding and full layers both ran
    assert {c[4] for c in band_kernel} == {1.0}  # the softcap reached every call
    assert any(c[1] == 1 for c in band_kernel)  # decode calls
