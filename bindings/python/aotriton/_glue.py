"""torch <-> pyaotriton: tensor tuples, dtype codes, current stream, checks.

This is on every eager call's path, so it avoids Python-level torch objects
where a raw value does (stream handle, device index) and binds the torch
functions it calls to module globals (no attribute lookups per call).
"""
import pyaotriton as _C
import torch

_DTYPES = {
    torch.float16: _C.DTYPE_FP16,
    torch.bfloat16: _C.DTYPE_BF16,
    torch.float32: _C.DTYPE_FP32,
    torch.float8_e4m3fn: _C.DTYPE_FP8E4M3,
    torch.int8: _C.DTYPE_INT8,
    torch.uint8: _C.DTYPE_UINT8,
    torch.int32: _C.DTYPE_INT32,
    torch.int64: _C.DTYPE_INT64,
}

# Raw handle of the current stream of a device (what Triton's own launcher uses);
# falls back to the public API on torch builds without it.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda index: torch.cuda.current_stream(index).cuda_stream)
_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device

# --- eager fast path or custom op --------------------------------------------------------------
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 1)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def traced(t) -> bool:
    """True when a call must go through the torch.ops.aotriton custom op: under
    torch.compile/export tracing, under any TorchDispatchMode (fake tensors,
    make_fx, FlopCounter...) or for tensor subclasses. Otherwise the eager
    path calls the extension directly and skips the dispatcher."""
    return _is_compiling() or type(t) not in _PLAIN or _dispatch_modes() > 0


# --- checks (shape/dtype/device only: they run on fake tensors too) ----------------------------
def check_cuda(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor (got device {t.device})")


def check_same_device(named) -> None:
    """named: (name, tensor or None) pairs. All tensors must be CUDA tensors on
    one device: a launch with a pointer of another device can kill the context."""
    first = None
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        index = t.get_device()
        if index < 0:
            raise ValueError(f"{name} must be a CUDA tensor (got device {t.device})")
        if first is None:
            first = (name, index)
        elif index != first[1]:
            raise ValueError(f"{name} is on cuda:{index} but {first[0]} is on cuda:{first[1]}: "
                             f"all tensors of one call must be on the same device")


def check_rank(t, rank: int, name: str, what: str) -> None:
    if t.dim() != rank:
        raise ValueError(f"{name} must be {rank}-D {what}, got shape {tuple(t.shape)}")


# --- views and launch environment (eager, real tensors) ---------------------------------------
def view(t: torch.Tensor, name: str):
    """(data_ptr, sizes, strides, dtype code) for the C++ TensorView. The
    public functions have checked the device already (check_same_device)."""
    code = _DTYPES.get(t.dtype)
    if code is None:
        raise ValueError(f"{name}: dtype {t.dtype} is not supported by aotriton")
    return (t.data_ptr(), t.shape, t.stride(), code)


def dtype_code(t, name: str) -> int:
    code = _DTYPES.get(t.dtype)
    if code is None:
        raise ValueError(f"{name}: dtype {t.dtype} is not supported by aotriton")
    return code


def opt_view(t, name):
    return None if t is None else view(t, name)


def eager_stream(t: torch.Tensor):
    """Raw handle of the current stream of t's device, or None when the launch
    needs a device guard: the default stream (handle 0) means "the current
    context", which must then be t's. Callers re-enter themselves under
    torch.cuda.device(t.get_device()) for None (rare), so the common path has
    no context manager."""
    index = t.get_device()
    stream = _raw_stream(index)
    if stream == 0:
        if index != _current_device():
            return None
        ensure_current_device(index)
    return stream


def stream_of(t: torch.Tensor) -> int:
    index = t.get_device()
    stream = _raw_stream(index)
    if stream == 0:
        ensure_current_device(index)
    return stream


# The default stream means "the context current in this thread", and a thread the
# CUDA runtime has not touched has none: torch's autograd worker threads run a
# backward without making the device current (it is "current" by index only), so
# the C++ runtime found no context there. This makes the device's primary context
# current when none is (one driver query otherwise).
ensure_current_device = _C.ensure_current_device


# --- a write-only buffer for outputs nobody reads -----------------------------------------------
# Inference forwards still write the softmax LSE; allocating it per call costs
# ~4.4 us from Python (measured on the H200 machine: bench/experiments/host_costs.py),
# a third of the call. Every buffer ever handed out stays alive: a CUDA graph
# may have captured its pointer, and freed memory could be reused by a live
# tensor that a replay would then overwrite. Concurrent streams may write it at
# once; nothing reads it.
_discard = {}   # device index -> (numel, data_ptr) of the largest buffer
_discard_keep = []


def discard_buffer(index: int, numel: int) -> int:
    """data_ptr of an fp32 device buffer of at least `numel` elements whose contents are never read."""
    have = _discard.get(index)
    if have is not None and have[0] >= numel:
        return have[1]
    size = max(numel, 2 * have[0] if have else 1 << 16)  # geometric growth bounds what is kept
    t = torch.empty(size, dtype=torch.float32, device=torch.device("cuda", index))
    _discard_keep.append(t)
    _discard[index] = (size, t.data_ptr())
    return _discard[index][1]
