"""Every kernel aotriton ships, declared (see kernel_rules.py for the vocabulary).

The declarations live in one file per kernel family (rules_<family>.py) and are
collected here. Adding a kernel: docs/adding-a-kernel.md (a Triton file, one
Kernel(...) in its family's rules file, a C++ operator that fills the
generated Inputs struct, its public declaration, a test; for Python, the
def_op and simple_op lines).
"""
from python.kernel_rules import Profile, declare_profile_subsets

from python.rules_flash import FLASH_KERNELS
from python.rules_flash_hopper import HOPPER_FLASH_KERNELS
from python.rules_moe import MOE_CI, MOE_KERNELS
from python.rules_moe_hopper import HOPPER_MOE_KERNELS as _HOPPER_MOE_BF16
from python.rules_moe_hopper_fp8 import fused_moe_gemm_hopper_fp8
from python.rules_moe_hopper_wq import HOPPER_WQ_KERNELS

HOPPER_MOE_KERNELS = _HOPPER_MOE_BF16 + [fused_moe_gemm_hopper_fp8] + HOPPER_WQ_KERNELS
KERNELS = MOE_KERNELS + FLASH_KERNELS + HOPPER_FLASH_KERNELS + HOPPER_MOE_KERNELS
_ATTENTION = [k for k in FLASH_KERNELS + HOPPER_FLASH_KERNELS if not k.name.startswith(("attn_decode", "kv_"))]
_DECODE = [k for k in FLASH_KERNELS if k.name.startswith(("attn_decode", "kv_"))]
_BY_NAME = {k.name: k for k in KERNELS}
# Profile membership is declared on each Kernel (Kernel.profiles); the MoE ci
# subset still comes as a table, checked against the kernel names.
declare_profile_subsets(MOE_KERNELS, "ci", MOE_CI)


# ----------------------------------------------------------------------------
# Build profiles
# ----------------------------------------------------------------------------
PROFILES = {
    p.name: p
    for p in [
        Profile("release", "every functional (rare ones through a fallback), tuned configs (default config "
                "where untuned)", skip_rare=True),
        Profile("tune", "every functional, every tuning config", tuning="all"),
        Profile("gputest", "what the GPU test suite exercises (a fast device build); release is the product"),
        Profile(
            "minimal",
            "one element-wise kernel (act_and_mul, fp16): quick CMake packaging and embedding tests",
            keep=lambda k, f: f["dtype"] == "fp16",
            kernels=["act_and_mul"],
        ),
        Profile("ci", "small subset that compiles on 2 CPU cores in a few minutes"),
        Profile("flashtest", "the gputest functionals of the attention forward and backward kernels only (a quick "
                "device build when only they changed)", kernels=[k.name for k in _ATTENTION],
                keep=lambda k, f: _BY_NAME[k].profiles.get("gputest", lambda g: True)(f)),
        Profile("moetest", "the gputest functionals of the MoE kernels only, the sm_90 Gluon GEMM included (a quick "
                "device build when only they changed)", kernels=[k.name for k in MOE_KERNELS + HOPPER_MOE_KERNELS],
                keep=lambda k, f: _BY_NAME[k].profiles.get("gputest", lambda g: True)(f)),
        Profile("decodetest", "moetest plus the KV-cache decode kernels (a quick device build when only the "
                "decode chains changed)", kernels=[k.name for k in MOE_KERNELS + HOPPER_MOE_KERNELS + _DECODE],
                keep=lambda k, f: _BY_NAME[k].profiles.get("gputest", lambda g: True)(f)),
    ]
}
DEFAULT_PROFILE = "release"
