"""Hugging Face transformers: "aotriton" as an attention and an experts implementation.

    import aotriton.integrations.transformers  # registers on import (needs transformers)
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="aotriton",
                                                 experts_implementation="aotriton")

Importing this module imports transformers; `import aotriton` does not.
`register()` is idempotent and is called on import. See docs/integrations.md.
"""
import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, _default_apply_gate
from transformers.masking_utils import (ALL_MASK_ATTENTION_FUNCTIONS, and_masks, bidirectional_mask_function,
                                        causal_mask_function, sdpa_mask, sliding_window_bidirectional_overlay,
                                        sliding_window_overlay)

from .. import flash as _flash
from .. import moe as _moe

NAME = "aotriton"


# ---------------------------------------------------------------------------
# Attention mask: what the attention adapter can take
# ---------------------------------------------------------------------------
# transformers builds a sliding-window layer's mask function as
# and_masks(overlay(W), base): recognized by these code objects (closures of
# one source function share one), so no mask needs to be materialized for it.
_AND_CODE = and_masks(causal_mask_function).__code__
_CAUSAL_OVERLAY_CODE = sliding_window_overlay(1).__code__
_BIDIRECTIONAL_OVERLAY_CODE = sliding_window_bidirectional_overlay(1).__code__


def _cell(fn, name):
    return fn.__closure__[fn.__code__.co_freevars.index(name)].cell_contents


@torch.compiler.disable  # introspects closures: plain Python, once per mask (dynamo cannot guard on code objects)
def sliding_window_pattern(mask_function, local_size=None):
    """(base mask function, W) when mask_function is exactly transformers'
    sliding_window_causal_mask_function(W) (key kv visible from query q iff
    q - W < kv <= q) or sliding_window_bidirectional_mask_function(W)
    (|q - kv| <= W); None for anything else (packed sequences, or/and mask
    functions, chunks combined with it). The window itself reaches the
    attention through its `sliding_window` argument, as in transformers'
    flash-attention path."""
    if getattr(mask_function, "__code__", None) is not _AND_CODE:
        return None
    parts = _cell(mask_function, "mask_functions")
    if len(parts) != 2:
        return None
    overlay, base = parts
    code = getattr(overlay, "__code__", None)
    if not ((code is _CAUSAL_OVERLAY_CODE and base is causal_mask_function)
            or (code is _BIDIRECTIONAL_OVERLAY_CODE and base is bidirectional_mask_function)):
        return None
    window = _cell(overlay, "sliding_window")
    if local_size is not None and local_size != window:
        return None
    return base, window


def aotriton_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=causal_mask_function,
                  attention_mask=None, **kwargs):
    """transformers' mask hook for "aotriton" (AttentionMaskInterface).

    Plain causal / bidirectional patterns, and their sliding-window variants
    (the window comes with the attention call), become None (no padding) or a
    bool [batch, kv_length] key-validity mask, which the attention unpads to
    varlen. Cache slots past the last written position (a static cache) count
    as padding. Any other pattern (packed sequences, or/and mask functions,
    chunked attention) is materialized as transformers' dense 4-D mask, which
    the attention refuses with an error naming it: never silently dropped.
    """
    if mask_function is not causal_mask_function and mask_function is not bidirectional_mask_function:
        sliding = sliding_window_pattern(mask_function, kwargs.get("local_size"))
        if sliding is not None:
            mask_function = sliding[0]
    if mask_function is not causal_mask_function and mask_function is not bidirectional_mask_function:
        kwargs.pop("allow_is_causal_skip", None)
        return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                         kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                         allow_is_causal_skip=False, **kwargs)
    valid = None
    if attention_mask is not None:
        valid = attention_mask[:, -kv_length:].to(torch.bool)
        if valid.shape[1] < kv_length:  # static cache: the mask covers the written slots only
            valid = F.pad(valid, (0, kv_length - valid.shape[1]), value=False)
    written = None
    if mask_function is causal_mask_function and isinstance(kv_offset, int):
        # A static cache's q_offset is a 0-d tensor (its length, kept on the device).
        written = q_offset + q_length - kv_offset
        if not isinstance(written, int) or 0 <= written < kv_length:  # unwritten static-cache slots at the end
            tail = torch.arange(kv_length, device=kwargs.get("device")) < written
            valid = tail.expand(batch_size, kv_length) if valid is None else valid & tail.to(valid.device)
    if valid is None:
        return None
    checks = [valid.all()]
    if written is not None and 1 < q_length < kv_length:
        # Against a cache the attention aligns a step's queries on each row's last valid
        # keys (bottom-right): padding among the queries must precede their real tokens.
        slots = torch.arange(q_length, device=valid.device) + (written - q_length)
        q_valid = valid.index_select(1, slots.to(valid.device))
        checks.append((q_valid[:, :-1] & ~q_valid[:, 1:]).any())  # a real token, then a pad
    all_valid, *pad_after_token = torch.stack(checks).tolist()  # one host sync
    if any(pad_after_token):
        raise NotImplementedError("aotriton attention: padding after real tokens among the queries of a step "
                                  "against a KV cache (right padding with a static cache, or a chunk with padding "
                                  "inside) is not supported; pad on the left")
    return None if all_valid else valid


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------
def _unpassed_window(module, seqlen_k):
    """A window the model applies through its mask alone (eager/sdpa see it, the
    kernel would not): a layer with a sliding_window attribute that it does not
    pass (Qwen2-MoE; Exaone-4's full layers keep the attribute with is_sliding
    False), or a config window without layer_types that no layer passes (Phi-MoE,
    Doge: their masks slide over every layer), where it can hide a key."""
    window = getattr(module, "sliding_window", None)
    if window is not None and getattr(module, "is_sliding", True):
        return f"{type(module).__name__} has sliding_window={window}"
    config = getattr(module, "config", None)
    window = getattr(config, "sliding_window", None)
    if (window is not None and not hasattr(module, "sliding_window") and getattr(config, "layer_types", None) is None
            and seqlen_k > window):
        return f"{type(config).__name__} has sliding_window={window} (shorter than the {seqlen_k} keys)"
    return None


def _refuse_features(module, attention_mask, sliding_window, s_aux, seqlen_k, kwargs):
    if s_aux is not None:
        raise NotImplementedError("aotriton attention: attention sinks (s_aux) are not supported")
    if kwargs.get("position_bias") is not None:
        raise NotImplementedError("aotriton attention: an additive position bias (position_bias) is not supported")
    unpassed = _unpassed_window(module, seqlen_k) if sliding_window is None else None
    if unpassed:
        raise NotImplementedError(f"aotriton attention: {unpassed} but the model does not pass it to the attention "
                                  f"function (transformers' eager/sdpa apply it through the mask alone), so the "
                                  f"kernel cannot apply the window; use attn_implementation='sdpa' for this model")
    if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.dtype != torch.bool):
        kind = ("a dense 4-D mask (a custom mask pattern: packed sequences, or/and mask functions, chunked "
                "attention, a sliding window combined with another pattern, or a 4-D mask passed by the caller)"
                if attention_mask.dim() == 4 else f"a {attention_mask.dim()}-D {attention_mask.dtype} mask")
        raise NotImplementedError(f"aotriton attention: {kind} is not supported; it takes causal or bidirectional "
                                  f"attention, with or without a sliding window, and a 2-D padding mask")


def window_size(sliding_window, is_causal, seqlen_q, seqlen_k):
    """flash-attn's (left, right) window for transformers' `sliding_window` W, or
    None when the window cannot hide a key. transformers' masks: causal sees
    q - W < kv <= q (W keys: left = W - 1); its bidirectional models pass W with
    |q - kv| <= W - 1 (left = right = W - 1). As transformers' flash path."""
    if sliding_window is None:
        return None
    w = int(sliding_window)
    if w < 1:
        raise ValueError(f"aotriton attention: sliding_window must be >= 1, got {sliding_window}")
    left = right = w - 1
    if is_causal:
        right = 0
    # bottom-right aligned: the last query sits on the last key
    if seqlen_k > left + 1 or (not is_causal and seqlen_q > right + 1):
        return (left, right)
    return None


def _check_feature_inputs(window, softcap, dtype, dropout):
    if window is None and not softcap:
        return
    what = " and ".join(n for n, on in ((f"sliding window {window}", window is not None),
                                        (f"softcap={softcap}", bool(softcap))) if on)
    if dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError(f"aotriton attention: {what} needs fp16/bf16 activations, got {dtype} "
                                  f"(load the model in bf16/fp16 or run under autocast)")
    if dropout > 0:
        raise NotImplementedError(f"aotriton attention: {what} with attention dropout ({dropout}) is not supported "
                                  f"(set the model's attention_dropout to 0)")


def _target_dtype(query, module):
    """fp32 activations (e.g. PEFT's fp32 layer norms) run in the autocast or the weights' half dtype."""
    if query.dtype != torch.float32:
        return query.dtype
    if torch.is_autocast_enabled(query.device.type):
        return torch.get_autocast_dtype(query.device.type)
    for p in module.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            return p.dtype
    return torch.float32


def _cu_seqlens(lengths):
    return F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))


def aotriton_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                               sliding_window=None, softcap=None, is_causal=None, s_aux=None, **kwargs):
    """transformers' attention signature: query (B, Hq, Sq, D), key/value (B, Hk, Sk, D)
    (Hq a multiple of Hk: GQA), attention_mask None or the bool [B, Sk] key-validity
    mask from aotriton_mask. Returns ((B, Sq, Hq, D), None).

    Causal attention is bottom-right aligned: Sq new queries against Sk >= Sq cached
    keys (decode, chunked prefill) see every key up to their own position, or the
    last `sliding_window` keys up to it; `softcap` caps the scaled logits
    (softcap * tanh(s / softcap)), both in the forward and the backward."""
    _refuse_features(module, attention_mask, sliding_window, s_aux, key.shape[2], kwargs)
    is_causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    dtype = _target_dtype(query, module)
    dropout = float(dropout or 0.0)
    window = window_size(sliding_window, is_causal, query.shape[2], key.shape[2])
    softcap = float(softcap) if softcap else 0.0
    _check_feature_inputs(window, softcap, dtype, dropout)
    features = {}
    if window is not None:
        features["window_size"] = window
    if softcap:
        features["softcap"] = softcap
    q, k, v = (t.transpose(1, 2).to(dtype) for t in (query, key, value))
    head_dim, v_head_dim = q.shape[-1], v.shape[-1]
    if v_head_dim != head_dim:
        if v_head_dim > head_dim:
            raise NotImplementedError(f"aotriton attention: value head dim {v_head_dim} > query head dim {head_dim}")
        v = F.pad(v, (0, head_dim - v_head_dim))  # MLA-style smaller value head: pad, crop the output
    if attention_mask is None:
        out = _flash.flash_attn_func(q, k, v, dropout_p=dropout, softmax_scale=scaling, causal=is_causal, **features)
    else:
        out = _varlen_attention(q, k, v, attention_mask, dropout, scaling, is_causal, features)
    if v_head_dim != head_dim:
        out = out[..., :v_head_dim]
    return out, None


def _varlen_attention(q, k, v, kv_valid, dropout, scaling, is_causal, features):
    """Unpad to flash_attn_varlen_func and scatter back; padded query rows are 0."""
    B, Sq = q.shape[0], q.shape[1]
    Sk = k.shape[1]
    if kv_valid.shape != (B, Sk):
        raise ValueError(f"aotriton attention: padding mask of shape {tuple(kv_valid.shape)} does not match "
                         f"(batch, kv_length) = {(B, Sk)}")
    kv_valid = kv_valid.to(q.device)
    # Queries are the newest Sq tokens: the whole sequence in a prefill (Sq == Sk),
    # all valid in a decode / chunk step against a cache (Sq < Sk).
    q_valid = kv_valid if Sq == Sk else None
    len_k = kv_valid.sum(1, dtype=torch.int32)
    cu_k = _cu_seqlens(len_k)
    if "window_size" in features:
        # Unpadding closes gaps: a window counts positions, so a row's keys must be one run.
        first = kv_valid.int().argmax(1)
        last = Sk - 1 - kv_valid.flip(1).int().argmax(1)
        gaps = ((len_k > 0) & (last - first + 1 != len_k)).sum()
        max_k, gaps = torch.stack([len_k.max(), gaps.to(len_k.dtype)]).tolist()  # one host sync
        if gaps:
            raise NotImplementedError("aotriton attention: a sliding window with a padding mask that has holes "
                                      "(padding between real tokens of a row) is not supported; pad on one side")
    else:
        max_k = int(len_k.max())
    if q_valid is None:
        cu_q = torch.arange(0, (B + 1) * Sq, Sq, dtype=torch.int32, device=q.device)
        q_rows, max_q = q.reshape(B * Sq, *q.shape[2:]), Sq
    else:
        cu_q = cu_k
        q_rows, max_q = q[q_valid], max_k
    out_rows = _flash.flash_attn_varlen_func(q_rows, k[kv_valid], v[kv_valid], cu_q, cu_k,
                                             max_q, max_k, dropout_p=dropout, softmax_scale=scaling,
                                             causal=is_causal, **features)
    if q_valid is None:
        return out_rows.view(B, Sq, *out_rows.shape[1:])
    return out_rows.new_zeros((B, Sq) + tuple(out_rows.shape[1:])).index_put((q_valid,), out_rows)


# ---------------------------------------------------------------------------
# Experts
# ---------------------------------------------------------------------------
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh"}


def _experts_activation(module):
    act = getattr(module.config, "hidden_act", None)
    if act not in _ACTIVATIONS:
        raise NotImplementedError(f"aotriton experts: activation {act!r} is not supported "
                                  f"(have {sorted(_ACTIVATIONS)})")
    if getattr(type(module), "_apply_gate", _default_apply_gate) is not _default_apply_gate:
        raise NotImplementedError(f"aotriton experts: {type(module).__name__} has its own gating (_apply_gate); "
                                  f"only act(gate) * up is supported")
    return _ACTIVATIONS[act]


def experts_weights(module):
    """(w1 [E, 2I, H], w2 [E, H, I]) in fused_experts' layout. Views of the module's
    parameters for transformers' default layout (concatenated [gate; up], not
    transposed); the transposed and interleaved layouts need one copy per call."""
    if getattr(module, "has_bias", False):
        raise NotImplementedError("aotriton experts: expert biases are not supported")
    if not getattr(module, "has_gate", True):
        raise NotImplementedError("aotriton experts: ungated experts (up_proj only) are not supported")
    w1, w2 = module.gate_up_proj, module.down_proj
    if getattr(module, "is_transposed", False):  # stored [E, H, 2I] and [E, I, H]
        w1, w2 = w1.transpose(1, 2), w2.transpose(1, 2)
    if not getattr(module, "is_concatenated", True):  # rows gate0, up0, gate1, up1, ...
        E, I2, H = w1.shape
        w1 = w1.reshape(E, I2 // 2, 2, H).transpose(1, 2).reshape(E, I2, H)
    # fused_experts needs the reduction dim contiguous: copy only what is not.
    w1 = w1 if w1.stride(-1) == 1 else w1.contiguous()
    w2 = w2 if w2.stride(-1) == 1 else w2.contiguous()
    return w1, w2


def aotriton_experts_forward(module, hidden_states, top_k_index, top_k_weights):
    """transformers' experts signature: hidden_states (tokens, H), top_k_index (tokens, k)
    (ids >= num_experts, expert-parallel sentinels, add nothing), top_k_weights (tokens, k).
    Differentiable in hidden_states, the expert weights and top_k_weights (bf16/fp16)."""
    activation = _experts_activation(module)
    w1, w2 = experts_weights(module)
    x = hidden_states
    if x.dtype != w1.dtype:
        x = x.to(w1.dtype)
    ids = top_k_index.to(torch.int32)
    out = _moe.fused_experts(x, w1, w2, top_k_weights, ids, activation=activation)
    return out.to(hidden_states.dtype)


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------
def register(name: str = NAME) -> None:
    """Register `name` in transformers' attention, attention-mask and experts interfaces."""
    AttentionInterface.register(name, aotriton_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, aotriton_mask)
    ALL_EXPERTS_FUNCTIONS.register(name, aotriton_experts_forward)


register()
