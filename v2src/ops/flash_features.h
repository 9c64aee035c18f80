// The attention features (sliding window, softcap, ALiBi) in kernel terms:
// validated once per call and written into any flash kernel's Args and
// Functional (attn_fwd, bwd_dkdv, bwd_dq share the field names).
#pragma once
#include <cstdint>

#include "aotriton/flash.h"
#include "kernel_inputs.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {
// One private namespace name: the runtime's helpers (aotriton::detail) answer
// `detail::` here too.
using namespace ::aotriton::detail;

struct KernelFeatures {
  bool local_window = false;  // run the band kernel (any feature on)
  int32_t score_mod = 0;      // 0 none, 1 softcap, 2 ALiBi (tritonsrc/flash/attn_mods.py)
  int32_t causal_type = 0;    // CAUSAL_TYPE functional (0 whenever local_window)
  int32_t window_left = -1, window_right = -1, window_align = 0;
  float softcap = 0.f;
  const float* alibi = nullptr;
  int64_t alibi_z = 0;  // batch stride of the slopes, 0 for one row shared by the batch
};

// Checks `f` against the call (dtype, dropout, batch, Hq) and maps it, with
// the causal kind, onto the kernels' band: causal is window_right = 0 on its
// diagonal, a window without causal is bottom-right aligned (flash-attn).
Status resolve_features(const char* op, const Features& f, CausalType causal, DType dtype, bool dropout,
                        int64_t batch, int64_t hq, KernelFeatures* out);

// The features' functional fields; their arguments go into each kernel's
// Inputs (alibi_slopes() and the band fields).
template <typename F>
void apply_feature_functional(const KernelFeatures& k, F& fn) {
  fn.CAUSAL_TYPE = k.causal_type;
  fn.LOCAL_WINDOW = k.local_window;
  fn.SCORE_MOD = k.score_mod;
}

inline detail::KernelTensor<1> alibi_slopes(const KernelFeatures& k) { return {k.alibi, {k.alibi_z}}; }

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
