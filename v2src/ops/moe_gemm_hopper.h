// The sm_90 route of the MoE grouped GEMM (python/rules_moe_hopper.py,
// tritonsrc/moe/grouped_gemm_hopper.py): one call from launch_gemm.
#pragma once
#include "moe_internal.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace moe {
namespace detail {

// Runs `j` on the Gluon kernel and sets *launched when the call is one it
// serves (fp16/bf16 unquantized, `aligned` as launch_gemm computes it, block
// size 128, the weights a TMA operand) and either options->force_config names
// one of its configs, or: no config is forced, AOTRITON_MOE_HOPPER is "1" (opt-in),
// the GPU is sm_90, this build compiled the kernel for it, the experts
// average at least kMoeHopperMinTokensPerExpert slots and N >= kMoeHopperMinN. Otherwise leaves
// *launched false (the Triton kernel runs). A forced config on a call it
// cannot serve is kInvalidArgument. `j` has passed launch_gemm's checks.
Status launch_gemm_hopper(const char* op, const GemmJob& j, bool aligned, Stream stream,
                          const KernelOptions* options, bool* launched);

}  // namespace detail
}  // namespace moe
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
