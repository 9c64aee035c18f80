// A deterministic stand-in for libFuzzer's main() where clang's libFuzzer is
// not available: mutates the seed stores with store_mutator.cc, feeds each
// input to LLVMFuzzerTestOneInput (built with ASan+UBSan, so any memory error
// aborts), and keeps accepted inputs as new seeds so mutations compound.
//   store_fuzz_driver [-runs=N] [-seed=S] [-max_len=B] SEED_FILE_OR_DIR...
// Same -runs/-seed give the same inputs; a crash prints the input's file.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "store_mutator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::vector<uint8_t> b;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
    std::fclose(f);
  }
  return b;
}

void add_seeds(const std::string& path, std::vector<std::vector<uint8_t>>* seeds) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return;
  if (S_ISREG(st.st_mode)) {
    seeds->push_back(read_file(path));
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  DIR* d = opendir(path.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  closedir(d);
  std::sort(names.begin(), names.end());  // directory order is not deterministic
  for (const std::string& n : names) add_seeds(path + "/" + n, seeds);
}

// Writes the input about to run, so that a crash leaves it behind.
void save_current(const std::vector<uint8_t>& input) {
  if (FILE* f = std::fopen("store_fuzz_crash_input.aks", "wb")) {
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
  }
}

}  // namespace

int main(int argc, char** argv) {
  unsigned long long runs = 10000, seed = 1;
  size_t max_len = 1 << 20;
  bool save_each = std::getenv("STORE_FUZZ_SAVE_INPUT") != nullptr;
  std::vector<std::vector<uint8_t>> seeds;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "-runs=", 6) == 0) runs = std::strtoull(argv[i] + 6, nullptr, 10);
    else if (std::strncmp(argv[i], "-seed=", 6) == 0) seed = std::strtoull(argv[i] + 6, nullptr, 10);
    else if (std::strncmp(argv[i], "-max_len=", 9) == 0) max_len = std::strtoull(argv[i] + 9, nullptr, 10);
    else add_seeds(argv[i], &seeds);
  }
  seeds.erase(std::remove_if(seeds.begin(), seeds.end(), [&](auto& s) { return s.empty() || s.size() > max_len; }),
              seeds.end());
  if (seeds.empty()) {
    std::fprintf(stderr, "store_fuzz_driver: no seed stores given (files or directories of .aks files)\n");
    return 2;
  }
  const size_t n_seeds = seeds.size();
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());  // the seeds themselves
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> buf;
  unsigned long long kept = 0;
  for (unsigned long long i = 0; i < runs; ++i) {
    // Mostly the original seeds, sometimes an earlier accepted mutant.
    const size_t pick = (i % 4 == 3 && seeds.size() > n_seeds) ? n_seeds + (i / 4) % (seeds.size() - n_seeds)
                                                                : i % n_seeds;
    buf = seeds[pick];
    buf.resize(max_len);
    const unsigned int mseed = unsigned(seed * 1000003ull + i);
    buf.resize(store_fuzz::mutate(buf.data(), seeds[pick].size(), max_len, mseed));
    if (save_each) save_current(buf);
    // A mutant the reader accepts is a new seed (bounded pool).
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
    if (store_fuzz::last_result() == aotriton::Status::kSuccess && seeds.size() < n_seeds + 256) {
      seeds.push_back(buf);
      ++kept;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("store_fuzz_driver: %llu runs from %zu seeds in %.1f s (%.0f/s), %llu accepted mutants kept\n", runs,
              n_seeds, secs, runs / (secs > 0 ? secs : 1), kept);
  store_fuzz::print_counts();
  return 0;
}
