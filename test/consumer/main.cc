// Links the installed libaotriton.a through find_package(aotriton) and calls it.
// Works with or without a GPU: an empty problem succeeds without touching the
// device, and a malformed one is rejected with a message.
#include <aotriton/moe.h>
#include <aotriton/runtime.h>

#include <cstdio>

int main() {
  using namespace aotriton;
  std::printf("aotriton %s (ABI v%d), profile %s, archs %s\n", aotriton::version(), AOTRITON_ABI_VERSION,
              build_profile(), build_archs());
  // An empty problem: validated and dispatched, then launches nothing.
  TensorView<2> out, in;
  out.sizes = {0, 8};
  out.strides = {8, 1};
  in.sizes = {0, 16};
  in.strides = {16, 1};
  Status s = aotriton::v1::moe::silu_and_mul(out, in, Stream{});
  std::printf("silu_and_mul(empty): %s\n", error_string(s));
  in.sizes = {0, 15};
  Status bad = aotriton::moe::silu_and_mul(out, in, Stream{});
  std::printf("silu_and_mul(bad shape): %s\n", error_string(bad));
  return (s == Status::kSuccess && bad == Status::kInvalidArgument) ? 0 : 1;
}
