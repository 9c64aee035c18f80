// Operators that launch several kernels resolve all of them before the first
// launch: a missing functional or image, a driver failure while loading, or a
// bad grid then fails the call with nothing written to its outputs.
#pragma once
#include <utility>

#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// While one is alive on a thread, generated launchers do everything (choose
// the functional and config, load the module, check the grid) except the
// driver launch itself.
class ResolveOnlyScope {
 public:
  ResolveOnlyScope() noexcept;
  ~ResolveOnlyScope();
  ResolveOnlyScope(const ResolveOnlyScope&) = delete;
  ResolveOnlyScope& operator=(const ResolveOnlyScope&) = delete;

 private:
  bool previous_;
};

// Runs `launch_all` (a callable returning Status that launches the kernels in
// order) once without launching, then, if that succeeded, for real. It must
// have no other side effects: the host work is done twice.
template <typename F>
Status resolve_then_launch(F&& launch_all) {
  {
    ResolveOnlyScope dry_run;
    AOTRITON_RETURN_IF_ERROR(launch_all());
  }
  return std::forward<F>(launch_all)();
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
