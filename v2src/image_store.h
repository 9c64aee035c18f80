// Reader for kernel image stores: one LZMA-compressed file per (kernel,
// functional, arch) holding the cubins of every tuning config plus their launch
// metadata. The format is described in python/image_store.py (the writer).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aotriton/status.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

// One tuning config. `cubin` points into the owning ImageStore (16-byte aligned)
// and lives as long as it does.
struct ImageEntry {
  std::string name, symbol;
  uint32_t shared_bytes = 0, num_warps = 0, num_ctas = 0;
  uint32_t global_scratch_size = 0, global_scratch_align = 1;
  uint32_t profile_scratch_size = 0, profile_scratch_align = 1;
  const uint8_t* cubin = nullptr;
  size_t cubin_size = 0;
};

// A fully decoded and checked store. Immutable after open/parse, so it can be
// read from any thread.
class ImageStore {
 public:
  static constexpr uint32_t kFormatVersion = 2;
  // Stores are written for one library ABI (aotriton::vN); another is refused.
  static constexpr uint32_t kAbiVersion = AOTRITON_ABI_VERSION;
  static constexpr size_t kHeaderSize = 64;
  static constexpr uint64_t kMaxRawSize = uint64_t(1) << 30;
  // Memory is bounded by the file's real content: the payload may inflate at
  // most kMaxInflateRatio times its size (real cubins compress ~8x), except
  // that any payload may inflate to kRawAllowance bytes.
  static constexpr uint64_t kMaxInflateRatio = 64;
  static constexpr uint64_t kRawAllowance = uint64_t(1) << 20;
  // More tuning configs than any profile has in one functional.
  static constexpr uint32_t kMaxEntries = 65536;

  // Reads, decompresses and checks `path`. A missing/unreadable file or one
  // that is not a regular file (FIFO, device, directory: refused without
  // blocking) gives kImageNotFound; another format or ABI version gives
  // kIncompatibleImage (naming both versions); anything malformed gives
  // kCorruptImage (message names the file and the problem). *out is reset
  // first and set only on success.
  static Status open(const std::string& path, std::unique_ptr<ImageStore>* out);
  // Same checks on a file already in memory; `label` names it in messages.
  static Status parse(const uint8_t* data, size_t size, const std::string& label,
                      std::unique_ptr<ImageStore>* out);

  ImageStore(const ImageStore&) = delete;
  ImageStore& operator=(const ImageStore&) = delete;

  uint32_t arch() const { return arch_; }
  const std::string& kernel() const { return kernel_; }
  const std::string& functional() const { return functional_; }
  const std::string& triton_version() const { return triton_version_; }
  // Sorted by name (byte order), names unique.
  const std::vector<ImageEntry>& entries() const { return entries_; }
  // Binary search by tuning config name; nullptr if absent.
  const ImageEntry* find(std::string_view name) const;
  size_t blob_count() const { return blob_count_; }
  size_t raw_size() const { return raw_.size(); }

 private:
  ImageStore() = default;
  uint32_t arch_ = 0;
  std::string kernel_, functional_, triton_version_;
  std::vector<ImageEntry> entries_;
  size_t blob_count_ = 0;
  std::vector<uint8_t> raw_;  // decompressed payload; entries point into it
};

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
