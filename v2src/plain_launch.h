// Operators that know a kernel's early start costs more than it saves at some
// sizes launch it plainly there (kernel_rules.Kernel.pdl kernels otherwise start
// as programmatic dependents on sm_90+: kernel_runtime.cc).
#pragma once

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// While one constructed with `plain` true is alive on a thread, generated
// launchers launch without the programmatic-dependent attribute (the kernel's
// griddepcontrol instructions are then no-ops); with `plain` false it changes nothing.
class PlainLaunchScope {
 public:
  explicit PlainLaunchScope(bool plain) noexcept;
  ~PlainLaunchScope();
  PlainLaunchScope(const PlainLaunchScope&) = delete;
  PlainLaunchScope& operator=(const PlainLaunchScope&) = delete;

 private:
  bool previous_;
};

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
