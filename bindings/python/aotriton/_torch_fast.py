"""The optional C++ eager path (_aotriton_torch, bindings/torch_ext): loaded
only under the torch version it was built for (it links libtorch), else the
torch layer runs through pyaotriton alone. AOTRITON_TORCH_EXT=0 turns it off;
off() does for a block (tests and benchmarks compare both paths). The callers
read the entry points from this module on every call, so off() reaches them."""
import contextlib
import os

import torch

from . import _build_info


def _load():
    built_for = getattr(_build_info, "TORCH_EXT_VERSION", "")
    if os.environ.get("AOTRITON_TORCH_EXT", "1") == "0":
        return None, "off (AOTRITON_TORCH_EXT=0)"
    if not built_for:
        return None, "not built (the build's Python had no torch, or AOTRITON_BUILD_TORCH_EXT=OFF)"
    if torch.__version__ != built_for:
        return None, f"not loaded: built for torch {built_for}, running torch {torch.__version__}"
    try:
        import _aotriton_torch
    except ImportError as e:
        return None, f"not loaded: {e}"
    return _aotriton_torch, f"loaded (torch {built_for})"


ext, status = _load()
# attn_fwd_plain(q, k, v, softmax_scale, causal_code) -> out, or NotImplemented
# when the call needs the Python path (which then checks and names errors).
attn_fwd_plain = ext.attn_fwd_plain if ext is not None else None
# act_and_mul_plain(x, out or None, activation code) -> out, or NotImplemented.
act_and_mul_plain = ext.act_and_mul_plain if ext is not None else None


@contextlib.contextmanager
def off():
    """The torch layer without the fast path inside the block (pyaotriton only)."""
    global attn_fwd_plain, act_and_mul_plain
    saved = attn_fwd_plain, act_and_mul_plain
    attn_fwd_plain = act_and_mul_plain = None
    try:
        yield
    finally:
        attn_fwd_plain, act_and_mul_plain = saved
