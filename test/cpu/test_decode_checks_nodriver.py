"""attn_decode's host-side checks and split choice through the Python binding,
on a machine without a CUDA driver (fake, non-overlapping device pointers):
every bad input is refused with a message naming it before any launch."""
import json

import pytest
from nodriver import run_without_driver

SCRIPT = r"""
import json


def t(shape, dtype=C.DTYPE_FP16):
    return fresh(shape, dtype)


FAR = 1 << 52  # hand-made strided views live here, apart from every fresh() buffer


def call(B=2, sq=1, hq=8, hk=2, d=128, cap=256, page=None, snew=0, splits=0, sms=132, causal=False, softcap=0.0,
         window=(-1, -1), bt_dtype=C.DTYPE_INT32, ws=0, query_only=True, q_dtype=C.DTYPE_FP16, lse_shape=None,
         alibi=None, scale=0.1, q=None, out=None, lse=None, kc=None, vc=None, kn=None):
    q = q or t((B, sq, hq, d), q_dtype)
    if page is None:
        kc, vc, bt = kc or t((B, cap, hk, d)), vc or t((B, cap, hk, d)), None
    else:
        mb = cap // page
        kc, vc, bt = t((B * mb, page, hk, d)), t((B * mb, page, hk, d)), t((B, mb), bt_dtype)
    kn = kn or (t((B, snew, hk, d)) if snew else None)
    vn = t((B, snew, hk, d)) if snew else None
    args = (q, kc, vc, kn, vn, t((B,), C.DTYPE_INT32), bt, out or t((B, sq, hq, d), q_dtype),
            lse or t(lse_shape or (B, hq, sq), C.DTYPE_FP32), scale, causal, window[0], window[1], softcap,
            None if alibi is None else t(alibi, C.DTYPE_FP32), splits, sms)
    try:
        if query_only:
            return "ok %d %d" % C.attn_decode_workspace_size(*args)
        nbytes = C.attn_decode_workspace_size(*args)[0]
        buf = t((max(ws, 1),), C.DTYPE_UINT8)[0] if ws >= 0 else 0
        C.attn_decode(*args, buf, ws if ws >= 0 else 0, 0)
        return "ok"
    except (ValueError, RuntimeError) as e:
        return type(e).__name__ + ": " + str(e)


MIRROR_SHAPES = [(B, sq, hq, hk, cap, sms) for B in (1, 3, 8, 64, 200) for sq in (1, 4) for hq, hk in ((32, 4), (8, 8))
                 for cap in (256, 1024, 8192, 131072) for sms in (132, 78)]
out = {
    "mirror": [[list(s), call(B=s[0], sq=s[1], hq=s[2], hk=s[3], cap=s[4], page=64, sms=s[5], d=64)]
               for s in MIRROR_SHAPES],
    "b1_128k": call(B=1, hq=32, hk=4, cap=131072, page=64),
    "b8_128k": call(B=8, hq=32, hk=4, cap=131072, page=64),
    "b64_128k": call(B=64, hq=32, hk=4, cap=131072, page=64),
    "b132_1k": call(B=132, hq=32, hk=4, cap=1024, page=64),
    "b1_short": call(B=1, hq=32, hk=4, cap=512, page=16),
    "forced": call(splits=5),
    "empty_batch": call(B=0),
    "empty_batch_call": call(B=0, query_only=False, ws=-1),
    "forced_one": call(B=1, cap=131072, splits=1),
    "too_many_splits": call(splits=129),
    "page_8": call(page=8, cap=64),
    "page_24": call(page=24, cap=48),
    "append_too_large": call(cap=32, snew=33),
    "append_fits": call(cap=32, snew=32),
    "gqa": call(hq=6, hk=4),
    "head_dim": call(d=100),
    "fp32": call(q_dtype=C.DTYPE_FP32),
    "block_table_dtype": call(page=16, bt_dtype=C.DTYPE_INT64),
    "softcap": call(softcap=30.0),
    "window": call(window=(128, 0)),
    "alibi_heads": call(alibi=(1, 8)),
    "alibi_batch": call(alibi=(2, 8)),
    "alibi_shape": call(alibi=(3, 8)),
    "softcap_and_alibi": call(softcap=30.0, alibi=(1, 8)),
    "window_bad": call(window=(-2, 0)),
    "softcap_negative": call(softcap=-1.0),
    "lse_shape": call(lse_shape=(2, 8, 2)),
    "seqlen_q_0": call(sq=0),
    "no_workspace": call(splits=4, query_only=False, ws=-1),
    "short_workspace": call(splits=4, query_only=False, ws=100),
    "valid_call": call(splits=4, query_only=False, ws=1 << 20),
    "scale_inf": call(scale=float("inf")),
    "num_sms_negative": call(sms=-5),
    # The last query token of a [B, H, S, D] prefill buffer of 2^20 tokens: a
    # head stride of 2^27 elements puts head 31 past the int32 in-sequence offsets.
    "q_heads_past_int32": call(B=1, hq=32, hk=4, q=(FAR, (1, 1, 32, 128), (1, 128, 1 << 27, 1), C.DTYPE_FP16)),
    "out_heads_past_int32": call(B=1, hq=32, hk=4, out=(FAR, (1, 1, 32, 128), (1, 128, 1 << 27, 1), C.DTYPE_FP16)),
    "lse_heads_past_int32": call(B=1, hq=32, hk=4, lse=(FAR, (1, 32, 1), (1, 1 << 27, 1), C.DTYPE_FP32)),
    "k_new_heads_past_int32": call(B=1, hk=2, snew=1, kn=(FAR, (1, 1, 2, 128), (1, 128, (1 << 31) - 1, 1),
                                                           C.DTYPE_FP16)),
    # Appending into a cache broadcast over the batch (stride 0): every sequence writes the same rows.
    "append_shared_cache": call(B=4, snew=1, query_only=False, ws=-1,
                                kc=(FAR, (4, 256, 2, 128), (0, 256, 128, 1), C.DTYPE_FP16),
                                vc=(FAR + (1 << 30), (4, 256, 2, 128), (0, 256, 128, 1), C.DTYPE_FP16)),
    "read_shared_cache": call(B=4, kc=(FAR, (4, 256, 2, 128), (0, 256, 128, 1), C.DTYPE_FP16),
                              vc=(FAR + (1 << 30), (4, 256, 2, 128), (0, 256, 128, 1), C.DTYPE_FP16)),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(prefix):
    return json.loads(run_without_driver(prefix, SCRIPT).splitlines()[-1])


def splits_and_bytes(s):
    _, nbytes, splits = s.split()
    return int(splits), int(nbytes)


def test_split_choice(results):
    # 2 programs per SM on 132 SMs, one wave rounded down: B * Hk = 4 -> 66
    # splits; 32 -> 8; 256 -> 1 (a second split would need 512 slots).
    assert splits_and_bytes(results["b1_128k"]) == (66, 66 * 32 * 129 * 4)
    assert splits_and_bytes(results["b8_128k"])[0] == 8
    assert splits_and_bytes(results["b64_128k"]) == (1, 0)
    assert splits_and_bytes(results["b132_1k"]) == (1, 0)
    assert splits_and_bytes(results["b1_short"])[0] == 2  # 512 keys: at most 2 splits of 256
    assert splits_and_bytes(results["forced"]) == (5, 5 * 16 * 129 * 4)
    assert splits_and_bytes(results["forced_one"]) == (1, 0)
    assert splits_and_bytes(results["append_fits"])[1] >= 0
    # An empty batch needs no workspace and launches nothing (it once divided by zero).
    assert splits_and_bytes(results["empty_batch"]) == (1, 0)
    assert results["empty_batch_call"] == "ok", results["empty_batch_call"]
    # A cache shared by the sequences (stride 0) may be read; only the append refuses it.
    for name in ("softcap", "window", "alibi_heads", "alibi_batch", "read_shared_cache"):  # pass the checks
        assert results[name].startswith("ok "), results[name]


BAD = {
    "too_many_splits": ("ValueError: invalid argument", "num_splits"),
    "page_8": ("ValueError: unsupported", "multiple of 16"),
    "page_24": ("ValueError: unsupported", "multiple of 16"),
    "append_too_large": ("ValueError: invalid argument", "too small for the append"),
    "gqa": ("ValueError: invalid argument", "multiple of kv heads"),
    "head_dim": ("ValueError: unsupported", "head dim"),
    "fp32": ("ValueError: unsupported", "fp16 or bf16"),
    "block_table_dtype": ("ValueError: invalid argument", "block_table"),
    "alibi_shape": ("ValueError: invalid argument", "alibi_slopes must be [1, Hq] or [B, Hq]"),
    "softcap_and_alibi": ("ValueError: unsupported", "softcap and alibi_slopes"),
    "window_bad": ("ValueError: invalid argument", "window_size"),
    "softcap_negative": ("ValueError: invalid argument", "softcap"),
    "lse_shape": ("ValueError: invalid argument", "lse"),
    "seqlen_q_0": ("ValueError: invalid argument", "seqlen_q"),
    "no_workspace": ("ValueError: invalid argument", "workspace"),
    "short_workspace": ("ValueError: invalid argument", "workspace"),
    "scale_inf": ("ValueError: invalid argument", "softmax_scale must be a positive finite number"),
    "num_sms_negative": ("ValueError: invalid argument", "num_sms = -5 must be >= 0"),
    "q_heads_past_int32": ("ValueError: unsupported", "q spans 4160749696 elements within one sequence"),
    "out_heads_past_int32": ("ValueError: unsupported", "out spans 4160749696 elements within one sequence"),
    "lse_heads_past_int32": ("ValueError: unsupported", "lse spans 4160749569 elements within one sequence"),
    "k_new_heads_past_int32": ("ValueError: unsupported", "k_new spans 2147483775 elements"),
    "append_shared_cache": ("ValueError: invalid argument", "output k_cache has elements that share memory"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_refused(results, name):
    prefix, words = BAD[name]
    assert results[name].startswith(prefix) and words in results[name], results[name]


def test_valid_call_passes_the_checks(results):
    # Past every check, the call needs the driver (or, in a profile without
    # the decode kernels, reports that first).
    assert results["valid_call"].startswith("RuntimeError:"), results["valid_call"]
    assert "CUDA driver not available" in results["valid_call"] or "not in" in results["valid_call"]


def test_python_split_rule_mirrors_the_operator(results):
    """decode_configs.choose_splits (the JIT launcher's and the tuner's) gives
    the operator's split count on every shape: the tuner bins its entries by it."""
    from tritonsrc.flash.decode_configs import choose_splits
    assert len(results["mirror"]) > 100
    for (B, sq, hq, hk, cap, sms), got in results["mirror"]:
        assert got.startswith("ok "), got
        assert int(got.split()[2]) == choose_splits(B, sq, hq, hk, cap, sms), (B, sq, hq, hk, cap, sms)
