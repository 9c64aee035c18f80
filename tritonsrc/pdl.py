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
its work early: it waits in turn). Kernels right before a decode GEMM or decode attention
trigger first (let_successor_start_then_wait, below). Launched normally (or USE_PDL False: sm_80,
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


@triton.jit
def let_successor_start_then_wait(USE_PDL: tl.constexpr):
    """wait_for_predecessor with the two steps swapped, for a kernel whose successor is a decode
    GEMM (act_and_mul and its quantizing forms before GEMM2, the dynamic quantization's second
    step before either GEMM) or decode attention (kv_append): the successor's programs may take
    free SM slots while this kernel itself still waits, and hint L2 for their weights or cached
    K/V rows there (tritonsrc/moe/l2_prefetch.py, tritonsrc/flash/kv_prefetch.py). That read of
    the GEMM's expert ids before its own wait stays safe because this kernel's predecessor is
    moe_align only for moe_dot_order_copy, and moe_align waits before it triggers: otherwise, by
    the time the GEMM launches, moe_align has finished. After moe_dot_order_copy the int4 GEMM1
    may start while moe_align still runs; it reads ids before its wait only to hint L2 (with the
    router weight on the input), where a stale id hints a wrong tile or none (ids outside the
    experts are skipped), never data: what it computes with, it reads after its wait, which the
    copy ends only after moe_align ended. Decode attention reads only the call's inputs there,
    for hints. Everything else here, as wait_for_predecessor."""
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def hint_l2(ptrs):
    """prefetch.global.L2 for every address in `ptrs` (sm_90 PTX; what a program may do with its
    inputs before its wait: tritonsrc/moe/l2_prefetch.py, tritonsrc/flash/kv_prefetch.py). A hint:
    no data comes back, and the caller keeps the addresses inside its tensors."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)
