// store_check [--stats] <file> [<entry-name>]: opens an image store with the
// C++ reader and prints its directory, or one `ERROR <status>: <message>` line
// (exit 1). --stats adds a last line `STATS <seconds> <peak RSS KiB>` (the time
// of ImageStore::open, the process's VmHWM). Used by
// test/cpu/test_image_store_cpp.py on valid, corrupt, crafted and fuzzed files.
#include <lzma.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>

#include "image_store.h"

namespace at = aotriton::detail;

static void print_entry(const at::ImageEntry& e) {
  std::printf("%s %s %u %u %u %zu %08x\n", e.name.c_str(), e.symbol.c_str(), e.shared_bytes, e.num_warps,
              e.num_ctas, e.cubin_size, unsigned(lzma_crc32(e.cubin, e.cubin_size, 0)));
}

// Peak resident set of this process (its own, unlike ru_maxrss after a fork).
static long peak_rss_kib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %ld", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

int main(int argc, char** argv) try {
  const bool stats = argc > 1 && std::strcmp(argv[1], "--stats") == 0;
  if (stats) --argc, ++argv;
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: store_check [--stats] <store-file> [<entry-name>]\n");
    return 2;
  }
  std::unique_ptr<at::ImageStore> store;
  const auto t0 = std::chrono::steady_clock::now();
  aotriton::Status s = at::ImageStore::open(argv[1], &store);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (s != aotriton::Status::kSuccess) {
    std::printf("ERROR %s: %s\n", aotriton::status_name(s), aotriton::last_error_message());
    if (stats) std::printf("STATS %.6f %ld\n", seconds, peak_rss_kib());
    return 1;
  }
  if (stats) {
    std::printf("OK %zu\nSTATS %.6f %ld\n", store->entries().size(), seconds, peak_rss_kib());
    return 0;
  }
  if (argc == 3) {
    const at::ImageEntry* e = store->find(argv[2]);
    if (e == nullptr) {
      std::printf("ERROR %s: %s: no entry '%s'\n", aotriton::status_name(aotriton::Status::kNotInBuild), argv[1],
                  argv[2]);
      return 1;
    }
    std::printf("OK 1 arch=%u kernel=%s functional=%s triton=%s\n", store->arch(), store->kernel().c_str(),
                store->functional().c_str(), store->triton_version().c_str());
    print_entry(*e);
    return 0;
  }
  std::printf("OK %zu arch=%u kernel=%s functional=%s triton=%s blobs=%zu raw=%zu\n", store->entries().size(),
              store->arch(), store->kernel().c_str(), store->functional().c_str(),
              store->triton_version().c_str(), store->blob_count(), store->raw_size());
  for (const at::ImageEntry& e : store->entries()) print_entry(e);
  return 0;
} catch (const std::exception& ex) {
  std::printf("ERROR internal error: %s\n", ex.what());
  return 1;
}
