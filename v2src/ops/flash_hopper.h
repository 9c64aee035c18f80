// What the sm_90 flash kernels' routes share (flash_fwd.cc, flash_bwd.cc):
// their TMA view of a [B, S, H, D] tensor and the switch that turns them off.
#pragma once
#include <cstdint>

#include "flash_common.h"
#include "tma_desc.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {

// The view [B, H, D/c, S, c] of a [B, S, H, D] tensor that the Gluon kernels'
// TMA boxes take (one box: a (batch, head), some rows and the whole head
// dim, padded to a power of two); c = 64 columns, 32 for head dims that are
// not a multiple of 64 (rules_flash_hopper.py TMA_COLS).
TmaTensor tma_bshd(const Strided& t, int64_t batch, int64_t rows, int64_t heads, int64_t head_dim);

// AOTRITON_FLASH_HOPPER: unset or "1" both sm_90 kernels run where they
// serve, "0" neither (to compare, or to rule them out), "fwd" / "bwd" only
// the forward / only the backward. Read once per process.
bool hopper_enabled(bool backward);

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
