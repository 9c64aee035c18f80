// The sm_90 route of the MoE grouped GEMM (python/rules_moe_hopper.py and
// rules_moe_hopper_fp8.py, tritonsrc/moe/grouped_gemm_hopper*.py): one call from launch_gemm.
#pragma once
#include "moe_internal.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {
namespace detail {

// Runs `j` on a Gluon kernel and sets *launched when the call is one they
// serve (fp16/bf16 unquantized: fused_moe_gemm_hopper; fp8 e4m3 with per-tensor,
// 128x128 block or per-channel scales and a bf16/fp16 output: fused_moe_gemm_hopper_fp8;
// `aligned` as launch_gemm computes it, block size 128, the weights a TMA operand)
// and either options->force_config names one of that kernel's configs, or: no
// config is forced, AOTRITON_MOE_HOPPER allows it (unset or "1": both; "0": neither),
// the GPU is sm_90, this build compiled the kernel for it, the
// experts average at least kMoeHopperMinTokensPerExpert (fp8:
// kMoeHopperFp8MinTokensPerExpert) slots and N >= kMoeHopperMinN (fp16/bf16 from
// kMoeHopperPersistentMinTokensPerExpert: fused_moe_gemm_hopper_persistent, one
// program per SM, where built). Otherwise leaves
// *launched false (the Triton kernel runs). A forced config on a call it
// cannot serve is kInvalidArgument. `j` has passed launch_gemm's checks.
Status launch_gemm_hopper(const char* op, const GemmJob& j, bool aligned, Stream stream,
                          const KernelOptions* options, bool* launched);

}  // namespace detail
}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
