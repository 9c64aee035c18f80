"""Flash attention kernel rules (see kernel_rules.py for the vocabulary)."""
from kernel_rules import Arg, AutotuneKey, Kernel, TuningSpace

FLASH_KERNELS = []
FLASH_CI = {}
