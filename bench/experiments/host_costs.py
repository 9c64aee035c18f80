"""Per-operation host cost (us) of what a Python flash_attn_func call does around
its one launch, on the GPU machine's torch (no aotriton build needed)."""
import time

import torch


def us(fn, n=20000, reps=7):
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    best.sort()
    return best[len(best) // 2]


q = torch.randn(1, 64, 4, 64, device="cuda", dtype=torch.float16)
k, v = torch.randn_like(q), torch.randn_like(q)
raw = torch._C._cuda_getCurrentRawStream
rows = {
    "empty_like(q)": lambda: torch.empty_like(q),
    "q.new_empty(B,H,S fp32)": lambda: q.new_empty(1, 4, 64, dtype=torch.float32),
    "torch.empty(shape, dtype, device)": lambda: torch.empty((1, 64, 4, 64), dtype=torch.float16, device=q.device),
    "torch.empty(n uint8) .view": lambda: torch.empty(66560, dtype=torch.uint8, device=q.device),
    "q.shape": lambda: q.shape,
    "q.stride()": lambda: q.stride(),
    "q.data_ptr()": lambda: q.data_ptr(),
    "q.get_device()": lambda: q.get_device(),
    "q.dim()": lambda: q.dim(),
    "q.dtype": lambda: q.dtype,
    "q.requires_grad": lambda: q.requires_grad,
    "raw stream": lambda: raw(0),
    "torch.compiler.is_compiling()": torch.compiler.is_compiling,
    "_len_torch_dispatch_stack": torch._C._len_torch_dispatch_stack,
    "is_grad_enabled": torch.is_grad_enabled,
    "type(q) in tuple": lambda: type(q) in (torch.Tensor, torch.nn.Parameter),
    "(ptr, shape, stride, code) tuple": lambda: (q.data_ptr(), q.shape, q.stride(), 1),
    "empty python call": lambda: None,
}
torch.cuda.synchronize()
for name, fn in rows.items():
    print(f"{name:40s} {us(fn):7.3f} us")
