// Image store reader. Every rule here mirrors python/image_store.py (the writer
// and reference reader); test/cpu/test_image_store_cpp.py checks that both
// readers accept and reject the same files.
#include "image_store.h"

#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <system_error>

#include "error.h"

namespace aotriton {
inline namespace AOTRITON_ABI_NAMESPACE {
namespace detail {

namespace {

constexpr uint8_t kMagic[8] = {'A', 'O', 'T', 'R', 'S', 'T', 'O', 'R'};
constexpr size_t kHeaderFields = 52;            // bytes before the zero padding
constexpr uint64_t kMemLimit = 128ull << 20;    // writer's dictionary is <= 64 MiB
constexpr size_t kBlobAlign = 16;
constexpr size_t kEntryFixed = 8 * 4;           // eight u32 after the two strings
constexpr size_t kMinEntrySize = 2 + 2 + kEntryFixed;
constexpr size_t kBlobRecord = 16;              // u64 offset, u64 size

uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t load_u64(const uint8_t* p) { return uint64_t(load_u32(p)) | (uint64_t(load_u32(p + 4)) << 32); }

// Rounds up to kBlobAlign; callers keep n far below SIZE_MAX (raw <= 1 GiB).
size_t align_up(size_t n) { return (n + kBlobAlign - 1) / kBlobAlign * kBlobAlign; }

std::string hex32(uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s(8, '0');
  for (int i = 7; i >= 0; --i, v >>= 4) s[i] = digits[v & 15];
  return s;
}

bool all_zero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

bool is_pow2(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF), the
// same rule as Python's bytes.decode("utf-8").
bool valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = p[i];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return false;
    if (n - i < len) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

// Bounds-checked reads from the decompressed payload.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& label)
      : data_(data), size_(size), label_(label) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  Status corrupt(const std::string& what) const {
    return fail(Status::kCorruptImage, label_ + ": " + what);
  }
  Status take(size_t n, const char* what, const uint8_t** out) {
    if (n > left())
      return corrupt(std::string("payload truncated in ") + what + " (need " + std::to_string(n) +
                     " bytes at offset " + std::to_string(pos_) + ", " + std::to_string(left()) + " left)");
    *out = data_ + pos_;
    pos_ += n;
    return Status::kSuccess;
  }
  Status str16(const std::string& what, std::string* out) {
    const uint8_t* p;
    AOTRITON_RETURN_IF_ERROR(take(2, what.c_str(), &p));
    const size_t n = load_u16(p);
    AOTRITON_RETURN_IF_ERROR(take(n, what.c_str(), &p));
    if (!valid_utf8(p, n)) return corrupt(what + " is not valid UTF-8");
    out->assign(reinterpret_cast<const char*>(p), n);
    return Status::kSuccess;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& label_;
};

std::string lzma_problem(lzma_ret r) {
  switch (r) {
    case LZMA_MEMLIMIT_ERROR: return "needs more than " + std::to_string(kMemLimit >> 20) + " MiB to decode";
    case LZMA_FORMAT_ERROR: return "is not an xz stream";
    case LZMA_OPTIONS_ERROR: return "uses unsupported xz options";
    case LZMA_DATA_ERROR: return "is corrupt (xz data error)";
    case LZMA_BUF_ERROR: return "is truncated";
    default: return "does not decode (liblzma error " + std::to_string(int(r)) + ")";
  }
}

// Decompresses one xz stream into `out`, which must end up exactly raw_size
// bytes. raw_size was bounded by the payload size before this is called, so
// the buffer is allocated once, at its exact size (an overread past the
// payload stays visible to ASan); a one-byte spare detects a longer stream.
Status inflate(const uint8_t* in, size_t in_size, size_t raw_size, const std::string& label,
               std::vector<uint8_t>* out) {
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_ret r = lzma_stream_decoder(&strm, kMemLimit, 0);
  if (r != LZMA_OK)
    return fail(r == LZMA_MEM_ERROR ? Status::kOutOfMemory : Status::kInternal,
                label + ": cannot start the xz decoder (liblzma error " + std::to_string(int(r)) + ")");
  struct End {
    lzma_stream* s;
    ~End() { lzma_end(s); }
  } end{&strm};

  out->resize(raw_size);
  uint8_t spare = 0;
  bool in_spare = raw_size == 0;
  strm.next_in = in;
  strm.avail_in = in_size;
  strm.next_out = in_spare ? &spare : out->data();
  strm.avail_out = in_spare ? 1 : raw_size;
  auto too_long = [&] {
    return fail(Status::kCorruptImage, label + ": payload decompresses to more than raw_size " + std::to_string(raw_size));
  };
  for (;;) {
    r = lzma_code(&strm, LZMA_FINISH);
    if (in_spare && strm.avail_out == 0) return too_long();
    if (r == LZMA_STREAM_END) break;
    if (r == LZMA_MEM_ERROR) return fail(Status::kOutOfMemory, label + ": out of memory decoding the payload");
    if (!in_spare && strm.avail_out == 0) {  // full: is there more?
      in_spare = true;
      strm.next_out = &spare;
      strm.avail_out = 1;
      continue;
    }
    if (r != LZMA_OK) return fail(Status::kCorruptImage, label + ": xz payload " + lzma_problem(r));
  }
  const size_t produced = in_spare ? raw_size : raw_size - strm.avail_out;
  if (strm.avail_in != 0)
    return fail(Status::kCorruptImage,
                label + ": " + std::to_string(strm.avail_in) + " bytes after the xz stream");
  if (produced != raw_size)
    return fail(Status::kCorruptImage, label + ": payload decompresses to " + std::to_string(produced) +
                                           " bytes, header says raw_size " + std::to_string(raw_size));
  return Status::kSuccess;
}

}  // namespace

const ImageEntry* ImageStore::find(std::string_view name) const {
  // Entries are sorted by byte order, which is what string_view compares.
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const ImageEntry& e, std::string_view n) { return std::string_view(e.name) < n; });
  if (it == entries_.end() || it->name != name) return nullptr;
  return &*it;
}

Status ImageStore::open(const std::string& path, std::unique_ptr<ImageStore>* out) {
  if (out == nullptr) return fail(Status::kInvalidArgument, "ImageStore::open: out is null");
  out->reset();
  auto errno_text = [](int e) { return std::error_code(e, std::generic_category()).message(); };
  int fd;
  // O_NONBLOCK: opening a FIFO must not wait for a writer (the caller may hold
  // a functional's lock); non-regular files are refused right after.
  do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return fail(Status::kImageNotFound, path + ": cannot open: " + errno_text(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return fail(Status::kImageNotFound, path + ": cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode))
    return fail(Status::kImageNotFound, path + ": not a regular file (" +
                                            (S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                                             : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)                ? "a device"
                                                                                                        : "special") +
                                            ")");
  // Nothing valid is larger than the header plus a payload of twice the raw limit.
  if (uint64_t(st.st_size) > kHeaderSize + 2 * kMaxRawSize)
    return fail(Status::kCorruptImage, path + ": file of " + std::to_string(st.st_size) + " bytes is too large");
  std::vector<uint8_t> data;
  try {
    data.resize(size_t(st.st_size));
  } catch (const std::bad_alloc&) {
    return fail(Status::kOutOfMemory, path + ": out of memory reading the file");
  }
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = ::read(fd, data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(Status::kImageNotFound, path + ": cannot read: " + errno_text(errno));
    if (n == 0) break;  // file shrank: parse reports what is missing
    got += size_t(n);
  }
  return parse(data.data(), got, path, out);
}

Status ImageStore::parse(const uint8_t* data, size_t size, const std::string& label,
                         std::unique_ptr<ImageStore>* out) try {
  if (out == nullptr) return fail(Status::kInvalidArgument, "ImageStore::parse: out is null");
  out->reset();
  if (data == nullptr && size != 0) return fail(Status::kInvalidArgument, label + ": data is null");
  auto corrupt = [&](const std::string& what) { return fail(Status::kCorruptImage, label + ": " + what); };

  // ---- header
  if (size < kHeaderSize)
    return corrupt("truncated header (" + std::to_string(size) + " bytes, need " + std::to_string(kHeaderSize) + ")");
  if (std::memcmp(data, kMagic, sizeof(kMagic)) != 0) return corrupt("bad magic, not an aotriton image store");
  const uint32_t version = load_u32(data + 8);
  const uint32_t header_size = load_u32(data + 12);
  const uint32_t arch = load_u32(data + 16);
  const uint32_t entry_count = load_u32(data + 20);
  const uint64_t payload_size = load_u64(data + 24);
  const uint64_t raw_size = load_u64(data + 32);
  const uint32_t payload_crc = load_u32(data + 40);
  const uint32_t raw_crc = load_u32(data + 44);
  const uint32_t abi = load_u32(data + 48);  // zero padding in format 1
  if (version != kFormatVersion || abi != kAbiVersion)
    return fail(Status::kIncompatibleImage,
                label + ": image store format " + std::to_string(version) + ", library ABI " + std::to_string(abi) +
                    "; this library reads format " + std::to_string(kFormatVersion) + ", ABI " +
                    std::to_string(kAbiVersion) + " (images from another aotriton build: use this build's images)");
  if (header_size != kHeaderSize)
    return corrupt("header_size " + std::to_string(header_size) + ", expected " + std::to_string(kHeaderSize));
  if (!all_zero(data + kHeaderFields, kHeaderSize - kHeaderFields)) return corrupt("non-zero header padding");
  if (arch == 0) return corrupt("arch is 0");
  if (entry_count == 0) return corrupt("entry_count is 0");
  if (entry_count > kMaxEntries)
    return corrupt("entry_count " + std::to_string(entry_count) + " exceeds the limit of " +
                   std::to_string(kMaxEntries));
  if (raw_size > kMaxRawSize)
    return corrupt("raw_size " + std::to_string(raw_size) + " exceeds the " + std::to_string(kMaxRawSize) +
                   " byte limit");
  const size_t file_payload = size - kHeaderSize;
  if (payload_size != file_payload)
    return corrupt(std::string(payload_size > file_payload ? "truncated payload" : "trailing bytes after payload") +
                   " (header says " + std::to_string(payload_size) + " bytes, file has " +
                   std::to_string(file_payload) + ")");
  if (uint64_t(entry_count) * kMinEntrySize > raw_size)
    return corrupt("entry_count " + std::to_string(entry_count) + " cannot fit in raw_size " +
                   std::to_string(raw_size));
  // Checked before anything is allocated: payload_size <= 2 GiB + 64 here.
  if (raw_size > kRawAllowance && raw_size > payload_size * kMaxInflateRatio)
    return corrupt("raw_size " + std::to_string(raw_size) + " is more than " + std::to_string(kMaxInflateRatio) +
                   " times the " + std::to_string(payload_size) + "-byte payload (not a real store)");
  const uint32_t got_payload_crc = lzma_crc32(data + kHeaderSize, file_payload, 0);
  if (got_payload_crc != payload_crc)
    return corrupt("payload checksum mismatch (CRC-32 " + hex32(got_payload_crc) + ", header says " +
                   hex32(payload_crc) + ")");

  // ---- payload
  std::unique_ptr<ImageStore> store(new ImageStore());
  store->arch_ = arch;
  std::vector<uint8_t>& raw = store->raw_;
  AOTRITON_RETURN_IF_ERROR(inflate(data + kHeaderSize, file_payload, size_t(raw_size), label, &raw));
  const uint32_t got_raw_crc = lzma_crc32(raw.data(), raw.size(), 0);
  if (got_raw_crc != raw_crc)
    return corrupt("raw checksum mismatch (CRC-32 " + hex32(got_raw_crc) + ", header says " + hex32(raw_crc) + ")");

  // ---- meta and directory
  Cursor c(raw.data(), raw.size(), label);
  AOTRITON_RETURN_IF_ERROR(c.str16("kernel name", &store->kernel_));
  AOTRITON_RETURN_IF_ERROR(c.str16("functional name", &store->functional_));
  AOTRITON_RETURN_IF_ERROR(c.str16("triton version", &store->triton_version_));
  if (store->kernel_.empty()) return c.corrupt("empty kernel name");
  if (entry_count > c.left() / kMinEntrySize)
    return c.corrupt("entry_count " + std::to_string(entry_count) + " cannot fit in " + std::to_string(c.left()) +
                     " payload bytes");
  std::vector<ImageEntry>& entries = store->entries_;
  std::vector<uint32_t> blob_of(entry_count);
  entries.resize(entry_count);
  uint32_t seen_blobs = 0;
  for (uint32_t i = 0; i < entry_count; ++i) {
    ImageEntry& e = entries[i];
    const std::string what = "directory entry " + std::to_string(i);
    AOTRITON_RETURN_IF_ERROR(c.str16(what + " name", &e.name));
    AOTRITON_RETURN_IF_ERROR(c.str16(what + " symbol", &e.symbol));
    const uint8_t* p;
    AOTRITON_RETURN_IF_ERROR(c.take(kEntryFixed, what.c_str(), &p));
    e.shared_bytes = load_u32(p);
    e.num_warps = load_u32(p + 4);
    e.num_ctas = load_u32(p + 8);
    e.global_scratch_size = load_u32(p + 12);
    e.global_scratch_align = load_u32(p + 16);
    e.profile_scratch_size = load_u32(p + 20);
    e.profile_scratch_align = load_u32(p + 24);
    const uint32_t blob = load_u32(p + 28);
    const std::string who = what + " ('" + e.name + "')";
    if (e.name.empty()) return c.corrupt(who + ": empty entry name");
    if (e.symbol.empty()) return c.corrupt(who + ": empty kernel symbol");
    if (e.num_warps < 1 || e.num_warps > 32)
      return c.corrupt(who + ": num_warps " + std::to_string(e.num_warps) + " not in [1, 32]");
    if (e.num_ctas < 1) return c.corrupt(who + ": num_ctas 0");
    if (!is_pow2(e.global_scratch_align))
      return c.corrupt(who + ": global_scratch_align " + std::to_string(e.global_scratch_align) +
                       " is not a power of two");
    if (!is_pow2(e.profile_scratch_align))
      return c.corrupt(who + ": profile_scratch_align " + std::to_string(e.profile_scratch_align) +
                       " is not a power of two");
    if (i > 0 && !(entries[i - 1].name < e.name)) return c.corrupt(who + ": names not strictly sorted");
    // Blobs are numbered in order of first use: each index is an old one or the next new one.
    if (blob > seen_blobs)
      return c.corrupt(who + ": blob_index " + std::to_string(blob) + " out of order (next new blob is " +
                       std::to_string(seen_blobs) + ")");
    if (blob == seen_blobs) ++seen_blobs;
    blob_of[i] = blob;
  }

  // ---- blob table and blob area
  const uint8_t* p;
  AOTRITON_RETURN_IF_ERROR(c.take(4, "blob count", &p));
  const uint32_t blob_count = load_u32(p);
  if (blob_count != seen_blobs)
    return c.corrupt("blob_count " + std::to_string(blob_count) + ", but the directory uses " +
                     std::to_string(seen_blobs) + " blobs");
  const uint8_t* table;
  // blob_count <= entry_count < 2^32 and kBlobRecord is 16: no overflow in size_t.
  AOTRITON_RETURN_IF_ERROR(c.take(size_t(blob_count) * kBlobRecord, "blob table", &table));
  const size_t area_start = align_up(c.pos());
  if (area_start > raw.size()) return c.corrupt("payload truncated before the blob area");
  if (!all_zero(raw.data() + c.pos(), area_start - c.pos())) return c.corrupt("non-zero padding before the blob area");
  const uint8_t* area = raw.data() + area_start;
  const size_t area_size = raw.size() - area_start;
  std::vector<std::pair<size_t, size_t>> blobs(blob_count);
  size_t expect = 0;  // end of the previous blob, always <= area_size
  for (uint32_t i = 0; i < blob_count; ++i) {
    const uint64_t off = load_u64(table + size_t(i) * kBlobRecord);
    const uint64_t len = load_u64(table + size_t(i) * kBlobRecord + 8);
    const std::string who = "blob " + std::to_string(i);
    if (off != align_up(expect))
      return c.corrupt(who + ": offset " + std::to_string(off) + ", expected " + std::to_string(align_up(expect)));
    // off <= area_size is checked before subtracting.
    if (len == 0 || off > area_size || len > area_size - off)
      return c.corrupt(who + ": offset " + std::to_string(off) + " size " + std::to_string(len) + " outside the " +
                       std::to_string(area_size) + "-byte blob area");
    if (!all_zero(area + expect, size_t(off) - expect)) return c.corrupt(who + ": non-zero padding before it");
    blobs[i] = {size_t(off), size_t(len)};
    expect = size_t(off + len);
  }
  if (expect != area_size) return c.corrupt(std::to_string(area_size - expect) + " bytes after the last blob");

  for (uint32_t i = 0; i < entry_count; ++i) {
    entries[i].cubin = area + blobs[blob_of[i]].first;
    entries[i].cubin_size = blobs[blob_of[i]].second;
  }
  store->blob_count_ = blob_count;
  *out = std::move(store);
  return Status::kSuccess;
} catch (const std::bad_alloc&) {
  return fail(Status::kOutOfMemory, label + ": out of memory decoding the image store");
}

}  // namespace detail
}  // namespace AOTRITON_ABI_NAMESPACE
}  // namespace aotriton
