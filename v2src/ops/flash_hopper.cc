#include "flash_hopper.h"

#include <cstdlib>
#include <cstring>

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace flash {
namespace detail {

TmaTensor tma_bshd(const Strided& t, int64_t batch, int64_t rows, int64_t heads, int64_t head_dim) {
  TmaTensor d;
  d.ptr = t.ptr;
  const int64_t c = head_dim % 64 == 0 ? 64 : 32;
  const int64_t shape[5] = {batch, heads, head_dim / c, rows, c}, strides[5] = {t.z, t.h, c, t.m, 1};
  for (int i = 0; i < 5; ++i) d.shape[i] = shape[i], d.strides[i] = strides[i];
  return d;
}

bool hopper_enabled(bool backward) {
  static const char* const v = std::getenv("AOTRITON_FLASH_HOPPER");
  if (!v) return true;
  if (std::strcmp(v, "0") == 0) return false;
  if (std::strcmp(v, "fwd") == 0) return !backward;
  if (std::strcmp(v, "bwd") == 0) return backward;
  return true;
}

}  // namespace detail
}  // namespace flash
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
