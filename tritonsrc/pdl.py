"""Programmatic dependent launch (sm_90+), the kernel side.

A kernel whose rule has pdl=True (python/kernel_rules.py) calls
wait_for_predecessor(USE_PDL) before its first global memory access (the decode
GEMMs read their block's expert id and hint L2 to fetch weights before it:
tritonsrc/moe/l2_prefetch.py). Launched
as a programmatic dependent, it may start while the kernel before it in the
stream is still running; griddepcontrol.wait returns once that kernel has
finished and its writes are visible. Then it lets the next kernel launch
(griddepcontrol.launch_dependents): that one's CTAs take free SM slots and wait
there while this one runs, so its launch latency is hidden (it can never start
its work early: it waits in turn). Launched normally (or USE_PDL False: sm_80,
the CPU interpreter, Triton's own launcher) both are no-ops.
"""
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def wait_for_predecessor(USE_PDL: tl.constexpr):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
