"""torch <-> pyaotriton: tensor tuples, dtype codes, current stream.

This is on every call's path, so it avoids Python-level torch objects where
a raw value does (stream handle, device index).
"""
import contextlib

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
_NO_GUARD = contextlib.nullcontext()


def check_cuda(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor (got device {t.device})")


def view(t: torch.Tensor, name: str):
    """(data_ptr, sizes, strides, dtype code) for the C++ TensorView."""
    code = _DTYPES.get(t.dtype)
    if code is None:
        check_cuda(t, name)
        raise ValueError(f"{name}: dtype {t.dtype} is not supported by aotriton")
    if not t.is_cuda:
        check_cuda(t, name)
    return (t.data_ptr(), t.shape, t.stride(), code)


def launch_env(t: torch.Tensor):
    """(stream handle, device guard) for launching on t's device.

    A non-default stream carries its context, so no guard is needed; the
    default stream (handle 0) means "current context", which must be t's.
    """
    index = t.get_device()
    stream = _raw_stream(index)
    if stream == 0 and index != _current_device():
        return stream, torch.cuda.device(index)
    return stream, _NO_GUARD


def stream_of(t: torch.Tensor) -> int:
    return _raw_stream(t.get_device())
