// Out of memory inside the public, noexcept entry points: every allocation
// throws std::bad_alloc while armed. Each call must return a status with a
// static message (kOutOfMemory), never terminate: their catch handlers may not
// allocate. Prints "name: <status> | <message>" for test_runtime_nogpu.py.
#include <cstdio>
#include <cstdlib>
#include <new>

#include "aotriton/flash.h"
#include "aotriton/moe.h"
#include "aotriton/runtime.h"

namespace {
bool g_fail_allocations = false;
alignas(16) unsigned char g_mem[8192];
}  // namespace

void* operator new(std::size_t n) {
  if (g_fail_allocations) throw std::bad_alloc();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace aotriton;

static TensorView<2> view2(DType dt, int64_t rows, int64_t cols, void* data) {
  TensorView<2> v;
  v.data = data;
  v.sizes = {rows, cols};
  v.strides = {cols, 1};
  v.dtype = dt;
  return v;
}

static void report(const char* name, Status s) {
  std::printf("%s: %s | %s\n", name, status_name(s), last_error_message());
}

int main() {
  // Shape mismatch: building its message allocates.
  g_fail_allocations = true;
  const Status s1 = moe::silu_and_mul(view2(DType::kFloat16, 4, 8, g_mem), view2(DType::kFloat16, 4, 15, g_mem + 4096), {});
  const Status s2 = set_image_dir("/nonexistent/dir/for/the/message");
  g_fail_allocations = false;
  report("act_and_mul_oom", s1);
  report("set_image_dir_oom", s2);
  return 0;
}
