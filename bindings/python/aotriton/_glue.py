"""torch <-> pyaotriton: tensor tuples, dtype codes, current stream."""
import pyaotriton as _C
import torch

AotritonError = RuntimeError  # non-argument failures are RuntimeError; bad arguments ValueError

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


def check_cuda(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor (got device {t.device})")


def view(t: torch.Tensor, name: str):
    """(data_ptr, sizes, strides, dtype code) for the C++ TensorView."""
    check_cuda(t, name)
    code = _DTYPES.get(t.dtype)
    if code is None:
        raise ValueError(f"{name}: dtype {t.dtype} is not supported by aotriton")
    return (t.data_ptr(), t.shape, t.stride(), code)


def stream_of(t: torch.Tensor) -> int:
    """The current torch stream of t's device (what the kernels launch on)."""
    return torch.cuda.current_stream(t.device).cuda_stream
