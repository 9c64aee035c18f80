"""Every kernel aotriton ships, declared (see kernel_rules.py for the vocabulary).

The declarations live in one file per kernel family (rules_<family>.py) and are
collected here. Adding a kernel: write tritonsrc/<family>/<name>.py, add one
Kernel(...) to its family's rules file, add a C++ operator that fills the
generated Args/Functional structs.
"""
from kernel_rules import Profile

from rules_flash import FLASH_CI, FLASH_GPUTEST, FLASH_KERNELS
from rules_moe import MOE_CI, MOE_KERNELS

KERNELS = MOE_KERNELS + FLASH_KERNELS
# kernel name -> which functionals the ci profile compiles (absent: all of them)
CI_SUBSET = {**MOE_CI, **FLASH_CI}
# kernel name -> which functionals the gputest profile compiles (absent: all)
GPUTEST_SUBSET = dict(FLASH_GPUTEST)


# ----------------------------------------------------------------------------
# Build profiles
# ----------------------------------------------------------------------------
PROFILES = {
    p.name: p
    for p in [
        Profile("release", "every functional (rare ones through a fallback), tuned configs (default config "
                "where untuned)", skip_rare=True),
        Profile("tune", "every functional, every tuning config", tuning="all"),
        Profile(
            "gputest",
            "what the GPU test suite exercises (a fast device build); release is the product",
            keep=lambda k, f: GPUTEST_SUBSET.get(k, lambda f: True)(f),
        ),
        Profile(
            "minimal",
            "one element-wise kernel (act_and_mul, fp16): quick CMake packaging and embedding tests",
            keep=lambda k, f: f["dtype"] == "fp16",
            kernels=["act_and_mul"],
        ),
        Profile(
            "ci",
            "small subset that compiles on 2 CPU cores in a few minutes",
            keep=lambda k, f: CI_SUBSET.get(k, lambda f: True)(f),
        ),
    ]
}
DEFAULT_PROFILE = "release"
