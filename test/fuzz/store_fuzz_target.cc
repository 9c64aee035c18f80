// Fuzz target for the image store reader (v2src/image_store.cc): parse any
// bytes, and check what a caller relies on. Built with libFuzzer
// (clang -fsanitize=fuzzer) or with store_fuzz_driver.cc (g++), always with
// ASan+UBSan; see docs/reliability.md.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "image_store.h"
#include "store_mutator.h"

namespace at = aotriton::detail;
using aotriton::Status;

namespace {

volatile unsigned g_sink;
const bool g_selftest = std::getenv("STORE_FUZZ_SELFTEST") != nullptr;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "store_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string label = "fuzz.aks";
  std::unique_ptr<at::ImageStore> store;
  const Status s = at::ImageStore::parse(data, size, label, &store);
  store_fuzz::count_result(s);
  if (s != Status::kSuccess) {
    if (store) violated("a failed parse left a store");
    if (s != Status::kCorruptImage && s != Status::kIncompatibleImage) violated("unexpected status");
    const char* msg = aotriton::last_error_message();
    if (std::strncmp(msg, label.c_str(), label.size()) != 0) violated("message does not name the file");
    return 0;
  }
  if (!store || store->entries().empty()) violated("success without entries");
  // Every entry can be found by name, and its cubin is readable (ASan checks the bytes).
  const at::ImageEntry* prev = nullptr;
  unsigned sum = 0;
  for (const at::ImageEntry& e : store->entries()) {
    if (prev && !(prev->name < e.name)) violated("entries not sorted");
    if (store->find(e.name) != &e) violated("find() misses an entry");
    if (e.cubin_size == 0 || reinterpret_cast<uintptr_t>(e.cubin) % 16 != 0) violated("empty or misaligned cubin");
    for (size_t i = 0; i < e.cubin_size; ++i) sum += e.cubin[i];
    // STORE_FUZZ_SELFTEST: read one byte past every cubin, which for the last
    // blob is past the payload, to prove ASan stops the run (test_store_fuzz.py).
    if (g_selftest) sum += e.cubin[e.cubin_size];
    prev = &e;
  }
  if (store->find(std::string("\xff", 1) + "no such config") != nullptr) violated("find() invents an entry");
  g_sink = sum;  // keeps the reads from being optimized away
  return 0;
}

// libFuzzer: structure-aware mutations (the payload's checksums would stop
// almost every blind byte flip).
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  return store_fuzz::mutate(data, size, max_size, seed);
}
