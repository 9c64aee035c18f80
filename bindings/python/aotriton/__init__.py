"""aotriton: ahead-of-time compiled Triton kernels for PyTorch (no JIT at run time).

Import needs `pyaotriton` (the C++ extension installed next to this package,
under <prefix>/lib/python) and torch.
"""
import pyaotriton as _C

from .flash import (flash_attn_backward, flash_attn_func, flash_attn_varlen_func,  # noqa: F401
                    philox_state, scaled_dot_product_attention)
from .moe import (fused_experts, fused_experts_workspace_size, fused_moe, gelu_and_mul,  # noqa: F401
                  invoke_fused_moe_kernel, moe_align_block_size, moe_gemm_block_size, moe_sum,
                  per_tensor_quant_fp8, per_token_group_quant_fp8, silu_and_mul, topk_softmax)
from .preload import preload  # noqa: F401  (custom ops: torch.ops.aotriton.*, registered on import)

version = _C.version
build_profile = _C.build_profile
build_archs = _C.build_archs
module_load_count = _C.module_load_count
image_dir = _C.image_dir
set_image_dir = _C.set_image_dir
