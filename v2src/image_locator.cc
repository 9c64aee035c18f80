#include "image_locator.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "aotriton/runtime.h"
#include "error.h"

#ifndef AOTRITON_INSTALL_IMAGE_DIR
#define AOTRITON_INSTALL_IMAGE_DIR ""
#endif

// A function of this library whose address dladdr maps to our binary.
extern "C" void aotriton_locate_image_dir_anchor() {}

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {

namespace {

std::mutex g_mu;
std::string g_explicit;  // set_image_dir()
std::string g_resolved;  // cache of the last successful lookup
std::atomic<uint64_t> g_generation{0};

bool is_dir(const std::string& p) {
  struct stat st;
  return !p.empty() && stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string parent_dir(const std::string& path) {
  auto pos = path.find_last_of('/');
  return pos == std::string::npos ? std::string(".") : path.substr(0, pos);
}

// Candidates in priority order, with where each came from (for the error).
std::vector<std::pair<std::string, std::string>> candidates() {
  std::vector<std::pair<std::string, std::string>> c;
  if (!g_explicit.empty()) {
    c.emplace_back(g_explicit, "set_image_dir()");
    return c;  // an explicit choice is never second-guessed
  }
  if (const char* env = std::getenv("AOTRITON_IMAGE_DIR"); env && *env) {
    c.emplace_back(env, "$AOTRITON_IMAGE_DIR");
    return c;
  }
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&aotriton_locate_image_dir_anchor), &info) && info.dli_fname) {
    std::string dir = parent_dir(info.dli_fname);
    c.emplace_back(dir + "/aotriton.images", "next to " + std::string(info.dli_fname));
    c.emplace_back(dir + "/../lib/aotriton.images", "../lib from " + std::string(info.dli_fname));
    c.emplace_back(dir + "/../aotriton.images", "../ from " + std::string(info.dli_fname));
  }
  if (*AOTRITON_INSTALL_IMAGE_DIR) c.emplace_back(AOTRITON_INSTALL_IMAGE_DIR, "install prefix");
  return c;
}

}  // namespace

namespace detail {
uint64_t image_dir_generation() noexcept { return g_generation.load(std::memory_order_acquire); }

Status locate_image_dir(std::string* out) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_resolved.empty()) {
    *out = g_resolved;
    return Status::kSuccess;
  }
  std::string tried;
  for (auto& [path, origin] : candidates()) {
    if (is_dir(path)) {
      g_resolved = path;
      *out = path;
      return Status::kSuccess;
    }
    tried += "\n  " + path + " (" + origin + ")";
  }
  return fail(Status::kImageNotFound, "no aotriton image directory found; tried:" + tried +
                                          "\nSet AOTRITON_IMAGE_DIR or call aotriton::set_image_dir().");
}
}  // namespace detail

Status set_image_dir(const char* path) noexcept {
  detail::clear_error();
  try {
    std::lock_guard<std::mutex> lock(g_mu);
    g_explicit = path ? path : "";
    g_resolved.clear();
    g_generation.fetch_add(1, std::memory_order_acq_rel);
    if (path && !is_dir(path))
      return detail::fail(Status::kImageNotFound, std::string("set_image_dir: not a directory: ") + path);
    return Status::kSuccess;
  } catch (...) {
    return detail::fail_exception("set_image_dir: unexpected exception");
  }
}

const char* image_dir() noexcept {
  static thread_local std::string result;
  detail::clear_error();  // a failed lookup leaves its reason
  try {
    if (detail::locate_image_dir(&result) != Status::kSuccess) result.clear();
  } catch (...) {
    result.clear();
    detail::fail_exception("image_dir: unexpected exception");
  }
  return result.c_str();
}

}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
