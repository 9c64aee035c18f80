// A V head dim different from the Q/K head dim (DeepSeek MLA: q/k 192, v 128):
// which pairs the kernels have (the BLOCK_DV functional, python/rules_flash.py
// VDIM_PAIRS) and the shape checks of the tensors that take V's head dim
// (v, out, dout, dv).
#pragma once
#include <cstdint>

#include "aotriton/flash.h"
#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {
// One private namespace name: the runtime's helpers (aotriton::detail) answer
// `detail::` here too.
using namespace ::aotriton::detail;

// *block_dv = 0 when v shares q/k's head dim, else the kernels' BLOCK_DV (the
// V head dim). kUnsupported, naming the supported pairs, for a pair the
// kernels do not have or one combined with fp32, dropout or features.
Status resolve_head_dim_v(const char* op, int64_t head_dim, int64_t head_dim_v, DType dtype, bool dropout,
                          bool features, int32_t* block_dv);

// `t` (out, dout) is shaped like q but with v's head dim, in q's dtype.
Status check_like_q_with_v_dim(const char* op, const char* name, const TensorView<4>& t, const TensorView<4>& q,
                               const TensorView<4>& v);
Status check_like_q_with_v_dim(const char* op, const char* name, const TensorView<3>& t, const TensorView<3>& q,
                               const TensorView<3>& v);

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
