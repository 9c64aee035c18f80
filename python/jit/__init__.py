"""The Triton JIT launchers of the kernel families: plain Python over
python/jit_launch.py (argument order, strides and grid from the rules), on
torch tensors: CUDA tensors on a GPU, CPU tensors under TRITON_INTERPRET=1.
The CPU interpreter tests, the GPU JIT-vs-AOT tests, the tuners and bench/ use
them; the kernels they launch stay in tritonsrc/ (kernels and their helpers
only).

    flash_fwd, flash_bwd, flash_decode     attn_fwd, the split backward, decode
    flash_fwd_hopper, flash_bwd_hopper     the sm_90 Gluon kernels (need a GPU)
    flash_features                         causal/window/softcap/ALiBi -> functionals
    moe, moe_bwd, moe_quant                fused_experts and its kernels, backward, quant modes
    moe_routing                            grouped top-k, expert-parallel dispatch
    moe_gemm_hopper                        the sm_90 grouped GEMM (needs a GPU)
"""
