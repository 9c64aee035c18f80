"""aotriton: ahead-of-time compiled Triton kernels for PyTorch (no JIT at run time).

Import needs `pyaotriton` (the C++ extension installed next to this package:
under <prefix>/lib/python, or in site-packages from the wheel) and torch.
"""
import os as _os

import pyaotriton as _C

from . import _build_info, _torch_fast

__version__ = _build_info.VERSION

# A wheel keeps the images inside this package (the extension's dladdr lookup
# covers only the install-tree layout). An explicit AOTRITON_IMAGE_DIR wins.
_WHEEL_IMAGES = _os.path.join(_os.path.dirname(__file__), "images")
if _os.path.isdir(_WHEEL_IMAGES) and not _os.environ.get("AOTRITON_IMAGE_DIR"):
    _C.set_image_dir(_WHEEL_IMAGES)

from .flash import (flash_attn_backward, flash_attn_func, flash_attn_varlen_func,  # noqa: F401
                    philox_state, scaled_dot_product_attention)
from .moe import (fused_experts, fused_experts_workspace_size, fused_moe, gelu_and_mul,  # noqa: F401
                  invoke_fused_moe_kernel, moe_align_block_size, moe_gemm_block_size, moe_sum,
                  per_tensor_quant_fp8, per_token_group_quant_fp8, silu_and_mul, topk_softmax)
from .decode import flash_attn_with_kvcache  # noqa: F401
from .moe import ep_dispatch, fused_topk, grouped_topk, swigluoai_and_mul  # noqa: F401  (routing coverage, issue 13)
from .moe import invoke_grouped_gemm_quant, per_token_quant_fp8  # noqa: F401  (issue-13 quant modes)
from .preload import preload  # noqa: F401  (custom ops: torch.ops.aotriton.*, registered on import)

version = _C.version
build_profile = _C.build_profile
build_archs = _C.build_archs
module_load_count = _C.module_load_count
image_dir = _C.image_dir
set_image_dir = _C.set_image_dir
set_programmatic_dependent_launch = _C.set_programmatic_dependent_launch  # include/aotriton/runtime.h
programmatic_dependent_launch = _C.programmatic_dependent_launch


def build_info() -> dict:
    """What this build holds and what it is compatible with: version, ABI
    version, image format version, profile, archs, and the Triton and CUDA
    (ptxas) releases the kernels were compiled with."""
    return {
        "version": _C.version(),
        "abi_version": _build_info.ABI_VERSION,
        "image_format_version": _build_info.IMAGE_FORMAT_VERSION,
        "profile": _C.build_profile(),
        "archs": [int(a) for a in _C.build_archs().split(";") if a],
        "ptx_fallback": _build_info.PTX_FALLBACK,
        "triton_version": _build_info.TRITON_VERSION,
        "cuda_version": _build_info.CUDA_VERSION,
        "image_dir": _C.image_dir(),
        "torch_extension": _torch_fast.status,
    }
