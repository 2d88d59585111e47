#include "io/crc32c.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define RINGFEED_CRC32C_X86 1
#endif

namespace ringfeed::io {

namespace {

constexpr std::uint32_t kPolyReflected = 0x82F63B78u;

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes, so
// eight input bytes fold into the CRC with eight independent lookups instead of a chain
// of eight dependent ones.
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1u) != 0 ? kPolyReflected : 0u);
    t[0][b] = c;
  }
  for (std::uint32_t b = 0; b < 256; ++b) {
    for (std::size_t k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFu];
  }
  return t;
}

constexpr Tables kTables = make_tables();

static_assert(kTables[0][0x80] == kPolyReflected,
              "byte 0x80 reaches the low bit on the last of its eight steps: the table of a "
              "single set bit is the polynomial itself");

std::uint64_t load_le64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

#ifdef RINGFEED_CRC32C_X86
__attribute__((target("sse4.2"))) std::uint32_t extend_sse42(std::uint32_t crc,
                                                             const unsigned char* p,
                                                             std::size_t n) {
  std::uint64_t c = ~crc;
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);  // x86 is little-endian, which is the order crc32 expects
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return ~c32;
}

// Three CRCs at once: the 8-byte steps of the three buffers alternate, so each crc32
// waits on its own chain only. What is left of each after the common part goes alone.
__attribute__((target("sse4.2"))) void each_sse42(const std::span<const std::byte>* data,
                                                  std::size_t count, std::uint32_t* out) {
  std::size_t i = 0;
  for (; i + 3 <= count; i += 3) {
    const auto* a = reinterpret_cast<const unsigned char*>(data[i].data());
    const auto* b = reinterpret_cast<const unsigned char*>(data[i + 1].data());
    const auto* c = reinterpret_cast<const unsigned char*>(data[i + 2].data());
    const std::size_t common = std::min({data[i].size(), data[i + 1].size(), data[i + 2].size()});
    std::uint64_t ca = 0xFFFFFFFFu;
    std::uint64_t cb = 0xFFFFFFFFu;
    std::uint64_t cc = 0xFFFFFFFFu;
    std::size_t at = 0;
    for (; at + 8 <= common; at += 8) {
      std::uint64_t wa;
      std::uint64_t wb;
      std::uint64_t wc;
      std::memcpy(&wa, a + at, 8);
      std::memcpy(&wb, b + at, 8);
      std::memcpy(&wc, c + at, 8);
      ca = _mm_crc32_u64(ca, wa);
      cb = _mm_crc32_u64(cb, wb);
      cc = _mm_crc32_u64(cc, wc);
    }
    out[i] = extend_sse42(~static_cast<std::uint32_t>(ca), a + at, data[i].size() - at);
    out[i + 1] = extend_sse42(~static_cast<std::uint32_t>(cb), b + at, data[i + 1].size() - at);
    out[i + 2] = extend_sse42(~static_cast<std::uint32_t>(cc), c + at, data[i + 2].size() - at);
  }
  for (; i < count; ++i) {
    out[i] =
        extend_sse42(0, reinterpret_cast<const unsigned char*>(data[i].data()), data[i].size());
  }
}
#endif

std::uint32_t extend_table(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  std::uint32_t c = ~crc;
  while (n >= 8) {
    const std::uint64_t w = load_le64(p) ^ c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
    --n;
  }
  return ~c;
}

bool detect_hardware() {
#ifdef RINGFEED_CRC32C_X86
  __builtin_cpu_init();  // needed if this runs before the compiler's own CPU probe
  return __builtin_cpu_supports("sse4.2") != 0;
#else
  return false;
#endif
}

using ExtendFn = std::uint32_t (*)(std::uint32_t, const unsigned char*, std::size_t);

ExtendFn select_extend() {
#ifdef RINGFEED_CRC32C_X86
  if (detect_hardware()) return &extend_sse42;
#endif
  return &extend_table;
}

const unsigned char* bytes_of(std::span<const std::byte> data) {
  return reinterpret_cast<const unsigned char*>(data.data());
}

}  // namespace

bool crc32c_hardware_available() {
  static const bool available = detect_hardware();
  return available;
}

std::uint32_t crc32c_extend(std::uint32_t crc, std::span<const std::byte> data) {
  // Chosen once; a function-local static is initialised thread-safely.
  static const ExtendFn extend = select_extend();
  return extend(crc, bytes_of(data), data.size());
}

std::uint32_t crc32c(std::span<const std::byte> data) {
  return crc32c_extend(0, data);
}

void crc32c_each(std::span<const std::span<const std::byte>> data, std::uint32_t* out) {
#ifdef RINGFEED_CRC32C_X86
  if (crc32c_hardware_available()) {
    each_sse42(data.data(), data.size(), out);
    return;
  }
#endif
  for (std::size_t i = 0; i < data.size(); ++i) out[i] = crc32c(data[i]);
}

std::uint32_t crc32c_extend_software(std::uint32_t crc, std::span<const std::byte> data) {
  return extend_table(crc, bytes_of(data), data.size());
}

std::uint32_t crc32c_extend_hardware(std::uint32_t crc, std::span<const std::byte> data) {
#ifdef RINGFEED_CRC32C_X86
  return extend_sse42(crc, bytes_of(data), data.size());
#else
  return extend_table(crc, bytes_of(data), data.size());
#endif
}

}  // namespace ringfeed::io
