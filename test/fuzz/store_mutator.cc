#include "store_mutator.h"

#include <lzma.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace store_fuzz {

namespace {

constexpr size_t kHeader = 64;
constexpr size_t kMaxRaw = 4 << 20;  // larger payloads are only mutated as bytes

// Deterministic generator (splitmix64): the same seed gives the same mutation.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
  bool chance(unsigned percent) { return below(100) < percent; }
};

const uint64_t kInteresting[] = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 36, 64, 0x7f, 0x80, 0xff, 0x100,
                                 0xfff, 0x1000, 0xffff, 0x10000, 65536 + 1, 0x7fffffff, 0x80000000ull,
                                 0xffffffffull, 0x100000000ull, 1ull << 30, (1ull << 30) + 1, 1ull << 40,
                                 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};

uint64_t interesting(Rng& r, size_t size) {
  switch (r.below(4)) {
    case 0: return size + r.below(33) - 16;  // near the buffer's size
    case 1: return r.next() >> r.below(64);
    default: return kInteresting[r.below(sizeof(kInteresting) / sizeof(kInteresting[0]))];
  }
}

void store_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint64_t load_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// Generic edits of a byte buffer, at most `cap` bytes long.
void mutate_bytes(Rng& r, std::vector<uint8_t>& b, size_t cap) {
  const int edits = 1 + int(r.below(4));
  for (int k = 0; k < edits; ++k) {
    const size_t n = b.size();
    switch (r.below(8)) {
      case 0:
        if (n) b[r.below(n)] ^= uint8_t(1u << r.below(8));
        break;
      case 1:
        if (n) b[r.below(n)] = uint8_t(interesting(r, n));
        break;
      case 2:
      case 3: {  // a 2/4/8-byte little-endian field
        const int width = 2 << r.below(3);
        if (n >= size_t(width)) store_le(&b[r.below(n - width + 1)], interesting(r, n), width);
        break;
      }
      case 4:
        if (n) b.resize(r.below(n));
        break;
      case 5: {  // insert a few bytes
        const size_t len = 1 + r.below(32), at = r.below(n + 1);
        if (n + len <= cap) b.insert(b.begin() + long(at), len, uint8_t(r.chance(50) ? 0 : r.next()));
        break;
      }
      case 6: {  // erase a range
        if (!n) break;
        const size_t at = r.below(n), len = 1 + r.below(std::min<size_t>(n - at, 64));
        b.erase(b.begin() + long(at), b.begin() + long(at + len));
        break;
      }
      default: {  // copy a range over another place
        if (n < 2) break;
        const size_t len = 1 + r.below(std::min<size_t>(n / 2, 64));
        const size_t from = r.below(n - len + 1), to = r.below(n - len + 1);
        std::memmove(&b[to], &b[from], len);
        break;
      }
    }
  }
}

bool inflate(const uint8_t* data, size_t size, std::vector<uint8_t>* raw) {
  if (size < kHeader) return false;
  const uint64_t raw_size = load_le(data + 32, 8);
  if (raw_size > kMaxRaw) return false;
  raw->resize(size_t(raw_size));
  uint64_t memlimit = 64 << 20;
  size_t in_pos = 0, out_pos = 0;
  const lzma_ret r = lzma_stream_buffer_decode(&memlimit, 0, nullptr, data + kHeader, &in_pos, size - kHeader,
                                               raw->data(), &out_pos, raw->size());
  raw->resize(out_pos);
  return r == LZMA_OK;
}

// Compresses raw into a fresh store body after the 64-byte header in `out`
// and fixes payload_size, raw_size and both checksums.
bool rewrap(const std::vector<uint8_t>& raw, std::vector<uint8_t>& out, size_t cap) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, 0)) return false;
  opt.dict_size = LZMA_DICT_SIZE_MIN;  // small inputs; keeps the encoder cheap
  lzma_filter filters[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, nullptr}};
  std::vector<uint8_t> payload(lzma_stream_buffer_bound(raw.size()));
  size_t pos = 0;
  if (lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC64, nullptr, raw.data(), raw.size(), payload.data(), &pos,
                                payload.size()) != LZMA_OK)
    return false;
  if (kHeader + pos > cap) return false;
  out.resize(kHeader + pos);
  std::memcpy(out.data() + kHeader, payload.data(), pos);
  store_le(&out[24], pos, 8);
  store_le(&out[32], raw.size(), 8);
  store_le(&out[40], lzma_crc32(payload.data(), pos, 0), 4);
  store_le(&out[44], lzma_crc32(raw.data(), raw.size(), 0), 4);
  return true;
}

void fix_payload_crc(std::vector<uint8_t>& b) {
  if (b.size() >= kHeader) store_le(&b[40], lzma_crc32(b.data() + kHeader, b.size() - kHeader, 0), 4);
}

uint64_t g_counts[16];
aotriton::Status g_last = aotriton::Status::kSuccess;

}  // namespace

size_t mutate(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng r{seed * 0x2545f4914f6cdd1dull + size};
  std::vector<uint8_t> b(data, data + size);
  std::vector<uint8_t> raw;
  const size_t mode = r.below(10);
  if (mode < 6 && inflate(data, size, &raw)) {
    // Payload edits behind valid checksums: the directory, blob table, blobs.
    mutate_bytes(r, raw, kMaxRaw);
    if (!rewrap(raw, b, max_size)) b.assign(data, data + size);
    if (r.chance(10) && b.size() >= kHeader) store_le(&b[20], interesting(r, raw.size()), 4);  // entry_count
  } else if (mode < 9 && size >= kHeader) {
    // One header field, sometimes with the payload checksum fixed up.
    static const int kFields[][2] = {{8, 4}, {12, 4}, {16, 4}, {20, 4}, {24, 8}, {32, 8}, {40, 4}, {44, 4}, {48, 4}};
    const auto& f = kFields[r.below(9)];
    store_le(&b[size_t(f[0])], interesting(r, size), f[1]);
    if (r.chance(50)) fix_payload_crc(b);
  } else {
    mutate_bytes(r, b, max_size);
    if (r.chance(50)) fix_payload_crc(b);
  }
  if (b.size() > max_size) b.resize(max_size);
  std::memcpy(data, b.data(), b.size());
  return b.size();
}

void count_result(aotriton::Status s) {
  ++g_counts[size_t(s) & 15];
  g_last = s;
}

aotriton::Status last_result() { return g_last; }

void print_counts() {
  for (int i = 0; i < 16; ++i)
    if (g_counts[i]) std::printf("  %-36s %llu\n", aotriton::status_name(aotriton::Status(i)),
                                 static_cast<unsigned long long>(g_counts[i]));
}

}  // namespace store_fuzz
